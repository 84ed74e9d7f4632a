"""Hydra jobs: what a job knows of itself (`hydra_job`) and the `Sweep` callback of multiruns (listed under
hydra.callbacks in conf/train.yaml)."""

import os
import sys
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback

from gptlab.apps.results.table import summarize
from gptlab.errors import GptlabError

SWEPT_KEYS_ENV = "GPTLAB_SWEPT_KEYS"  # set by the Sweep callback: the keys the running multirun varies


def hydra_job() -> dict:
    """This Hydra job's overrides and output directory; in a multirun also the sweep directory and the keys the
    sweep varies (when the Sweep callback ran); all None outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {"overrides": None, "output_dir": None, "sweep_dir": None, "swept_keys": None}
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    swept = os.environ.get(SWEPT_KEYS_ENV) if multirun else None
    return {"overrides": list(hc.overrides.task), "output_dir": hc.runtime.output_dir,
            "sweep_dir": hc.sweep.dir if multirun else None,
            "swept_keys": swept.split(",") if swept is not None else None}


def swept_keys(config) -> list[str]:
    """The keys a multirun varies: sweeps on the command line (model=a,b) and in hydra.sweeper.params (the
    presets in conf/sweep/, Optuna's search space)."""
    params = config.hydra.sweeper.get("params") or {}
    args = [*config.hydra.overrides.task, *(f"{k}={v}" for k, v in params.items())]
    return [o.key_or_group for o in OverridesParser.create().parse_overrides(args) if o.is_sweep_override()]


def print_plots(sweep_dir: Path) -> None:
    """Draw the sweep's figures (results/figures.py) and say where they are; a sweep without metrics or without
    matplotlib gets a one-line note instead."""
    try:
        from gptlab.apps.results.figures import write_figures

        files = write_figures(sweep_dir)
    except ImportError as e:
        print(f"plots: not drawn ({e}; pip install -e '.[plot]')", flush=True)
    except GptlabError as e:
        print(f"plots: not drawn ({e})", flush=True)
    else:
        print(f"plots: {files[0]} (and one per job beside it)", flush=True)


class Sweep(Callback):
    """At the start of a multirun: tells the jobs which keys it varies (W&B runs are named after them). At the
    end: a table of every job (overrides, val/test ppl, tokens/s, status), also written to <sweep dir>/summary.csv,
    and the sweep's figures in <sweep dir>/plots/; then exit with status 1 if any job failed, so that scripts notice.

    Jobs catch their own errors in a multirun (gptlab.apps.train.run records them in result.json), so one failing
    job neither stops the sweep nor hides the others' results."""

    def on_multirun_start(self, config, **kwargs):
        os.environ[SWEPT_KEYS_ENV] = ",".join(swept_keys(config))  # inherited by launchers' job processes

    def on_multirun_end(self, config, **kwargs):
        print(f"\nsweep summary: {config.hydra.sweep.dir}", flush=True)
        rows = summarize(Path(config.hydra.sweep.dir))
        print_plots(Path(config.hydra.sweep.dir))
        failed = [r["job"] for r in rows if r["status"] != "completed"]
        if failed:
            # SystemExit passes through Hydra, which turns callbacks' exceptions into warnings
            sys.exit(f"{len(failed)} of {len(rows)} jobs failed: {', '.join(failed)}")
