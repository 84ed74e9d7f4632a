"""Train a GPT on WikiText-2: `python train.py model=gpt_mini trainer.devices=4` (see conf/train.yaml)."""

from gptlab.apps.runtime.startup import fast_malloc

fast_malloc()  # first: restarts Python once with malloc settings that spare page faults (apps/runtime/startup.py)

import hydra  # noqa: E402

from gptlab.config.cli import clear_errors, refused_runs_leave_nothing  # noqa: E402
from gptlab.config.compose import setup  # noqa: E402

setup()  # gptlab's schemas and resolvers, before Hydra composes the config


@clear_errors  # bad input: one line `error: ...`, exit code 2
@hydra.main(version_base=None, config_path="conf", config_name="train")
def main(cfg):
    from gptlab.apps.train import run  # checks the config before it imports torch

    with refused_runs_leave_nothing():  # a single run refused for its input leaves no directory
        return run(cfg)


if __name__ == "__main__":
    main()
