"""Evaluate a trained GPT on WikiText-2: `python eval.py ckpt_path=<checkpoint> [split=both] [stride=64]`
(see conf/eval.yaml)."""

from gptlab.apps.startup import fast_malloc

fast_malloc()  # first: restarts Python once with malloc settings that spare page faults (gptlab/apps/startup.py)

import hydra  # noqa: E402

from gptlab.apps.errors import clear_errors  # noqa: E402
from gptlab.apps.evaluate import run  # noqa: E402
from gptlab.apps.setup import setup  # noqa: E402

setup()  # gptlab's config resolvers, before Hydra composes the config


@clear_errors  # bad input: one line `error: ...`, exit code 2
@hydra.main(version_base=None, config_path="conf", config_name="eval")
def main(cfg):
    run(cfg)


if __name__ == "__main__":
    main()
