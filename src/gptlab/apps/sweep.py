"""`python -m gptlab.apps.sweep dir=<multirun directory> [csv=<file>]`: the table of a multirun's jobs (overrides, val
and test perplexity, tokens/s, status), also one still running, written to <dir>/summary.csv (conf/sweep.yaml; the
keys: gptlab/config/run.py, SweepConfig). Every multirun prints it at its end."""

from gptlab.apps.results.result import RESULT_FILE
from gptlab.apps.results.table import summarize
from gptlab.config.validate import validate
from gptlab.errors import GptlabError


def run(cfg) -> list[dict]:
    validate(cfg, "sweep")
    rows = summarize(cfg.dir, cfg.csv)
    if not rows:
        raise GptlabError(f"dir={cfg.dir}: no jobs here (no {RESULT_FILE} or .hydra/overrides.yaml)")
    return rows


if __name__ == "__main__":
    from gptlab.apps import commands

    commands.sweep()  # the one definition of the command: also the console script gptlab-sweep
