"""Generate text with a trained GPT: `python generate.py ckpt_path=<checkpoint> prompt="The history of"`; without a
prompt, one prompt per line from stdin; `task=qa task_file=<jsonl>` scores a task (see conf/generate.yaml)."""

from gptlab.apps.startup import fast_malloc

fast_malloc()  # first: restarts Python once with malloc settings that spare page faults (gptlab/apps/startup.py)

import hydra  # noqa: E402

from gptlab.apps.errors import clear_errors  # noqa: E402
from gptlab.apps.generate import run  # noqa: E402
from gptlab.apps.setup import setup  # noqa: E402

setup()  # gptlab's config resolvers, before Hydra composes the config


@clear_errors  # bad input: one line `error: ...`, exit code 2
@hydra.main(version_base=None, config_path="conf", config_name="generate")
def main(cfg):
    run(cfg)


if __name__ == "__main__":
    main()
