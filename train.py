"""Train a GPT on WikiText-2: `python train.py model=gpt_mini trainer.devices=4` (see conf/train.yaml)."""

from gptlab.startup import fast_malloc

fast_malloc()  # first: restarts Python once with malloc settings that spare page faults (gptlab/startup.py)

import hydra  # noqa: E402

from gptlab.errors import clear_errors  # noqa: E402
from gptlab.train import run  # noqa: E402


@clear_errors  # bad input: one line `error: ...`, exit code 2
@hydra.main(version_base=None, config_path="conf", config_name="train")
def main(cfg):
    return run(cfg)


if __name__ == "__main__":
    main()
