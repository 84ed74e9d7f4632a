"""Train a GPT on WikiText-2: `python train.py model=gpt_mini trainer.devices=4` (see conf/train.yaml)."""

import hydra

from gptlab.errors import clear_errors
from gptlab.train import run


@clear_errors  # bad input: one line `error: ...`, exit code 2
@hydra.main(version_base=None, config_path="conf", config_name="train")
def main(cfg):
    return run(cfg)


if __name__ == "__main__":
    main()
