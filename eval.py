"""Evaluate a trained GPT on WikiText-2: `python eval.py ckpt_path=<checkpoint> [split=both] [stride=64]`
(see conf/eval.yaml)."""

import hydra

from gptlab.errors import clear_errors
from gptlab.evaluate import run


@clear_errors  # bad input: one line `error: ...`, exit code 2
@hydra.main(version_base=None, config_path="conf", config_name="eval")
def main(cfg):
    run(cfg)


if __name__ == "__main__":
    main()
