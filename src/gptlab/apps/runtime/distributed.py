"""Several processes: a global batch fixed in tokens, and Hydra multirun jobs that use DDP or FSDP.

Lightning starts the ranks (`trainer.devices=N` on one machine; torchrun or SLURM across machines). Each rank's
share of the data is decided in gptlab/data/datamodule.py; the metrics are summed over ranks by torchmetrics
(training/module.py).

A multirun job that needs several processes runs as a single run in a fresh process
(`run_job_in_own_process`): Lightning's launcher starts the other ranks by re-running `sys.argv`, which in a
multirun is the whole sweep (`-m seed=1,2`), so every rank would start the sweep again, each with its own sweep
directory (a new `${now:...}`) and, under Optuna, its own trial parameters. A single run is what Lightning's
launcher handles: it re-runs the command line with `hydra.run.dir` pinned to the run's directory.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import torch
from lightning.fabric.plugins.environments import LSFEnvironment, SLURMEnvironment, TorchElasticEnvironment
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator

from gptlab.apps.results.result import RESULT_FILE, read_result
from gptlab.config.run import accumulation, process_count

log = logging.getLogger(__name__)


def configure_batch(cfg, dm, trainer) -> None:
    """Derive trainer.accumulate_grad_batches from `global_batch_tokens` (when set), and count
    trainer.val_check_interval in optimizer steps as train.yaml documents (Lightning counts micro-batches)."""
    if cfg.get("global_batch_tokens"):  # (not with trainer.accumulate_grad_batches: config/run.py refuses both)
        trainer.accumulate_grad_batches = accumulation(int(cfg.global_batch_tokens), dm.block_size, dm.batch_size,
                                                       trainer.world_size)
        if trainer.is_global_zero:
            log.info("global batch %d tokens = block %d × micro-batch %d × %d processes × %d accumulated",
                     cfg.global_batch_tokens, dm.block_size, dm.batch_size, trainer.world_size,
                     trainer.accumulate_grad_batches)
    if trainer.accumulate_grad_batches > 1 and isinstance(trainer.val_check_interval, int):
        trainer.val_check_interval *= trainer.accumulate_grad_batches


def check_cpu_processes(trainer) -> None:
    """More CPU processes than cores run (Lightning gives each one thread) but slower than one process: say so."""
    cores = os.cpu_count() or 1
    if isinstance(trainer.accelerator, CPUAccelerator) and trainer.num_devices > cores and trainer.is_global_zero:
        log.warning("trainer.devices=%d CPU processes on %d cores: they run, one thread each, slower than a single "
                    "process; CPU DDP is for trying out the distributed code path", trainer.num_devices, cores)


# --- multirun jobs with several processes


def planned_world_size(trainer_cfg) -> int:
    """The number of processes `trainer_cfg` asks for (devices × num_nodes); devices=auto (or -1) counts what
    Lightning would take: every GPU, or one CPU process."""
    devices, nodes = trainer_cfg.get("devices", "auto"), trainer_cfg.get("num_nodes")
    explicit = process_count(devices, nodes)
    if explicit is not None:
        return explicit
    accelerator = trainer_cfg.get("accelerator", "auto")
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return (CUDAAccelerator.auto_device_count() if on_gpu else 1) * int(nodes or 1)


def ranks_started_outside() -> bool:
    """True in a rank started by torchrun, SLURM, LSF or Lightning's launcher: it must not start ranks itself."""
    return ("LOCAL_RANK" in os.environ or TorchElasticEnvironment.detect() or SLURMEnvironment.detect()
            or LSFEnvironment.detect())


def job_needs_own_process(cfg) -> bool:
    """True for a Hydra multirun job that would start more than one process from this one."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN or ranks_started_outside():
        return False
    return planned_world_size(cfg.trainer) > 1


# hydra.* overrides that make a job part of a sweep; the single run of the job drops them
_SWEEP_KEYS = ("hydra.mode", "hydra.sweep", "hydra.sweeper", "hydra/sweeper", "hydra.launcher", "hydra/launcher",
               "hydra.run", "hydra.output_subdir", "hydra.job.chdir")
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")


def single_run_command(hc, argv: list[str]) -> list[str]:
    """The command that runs the current multirun job `hc` (its HydraConfig) as a single run in its own directory."""
    from hydra.utils import to_absolute_path

    import __main__

    spec = getattr(__main__, "__spec__", None)
    cmd = [sys.executable, "-m", spec.name] if spec else [sys.executable, to_absolute_path(argv[0])]
    flags, i = [], 1
    while i < len(argv):  # keep the config location flags (`-cn NAME` or `--config-name=NAME`); drop -m
        name = argv[i].split("=", 1)[0]
        if name in _CONFIG_FLAGS:
            takes_next = "=" not in argv[i] and i + 1 < len(argv)
            flags += argv[i : i + 1 + takes_next]
            i += takes_next
        i += 1
    hydra_overrides = [o for o in hc.overrides.hydra if not o.lstrip("+~").startswith(_SWEEP_KEYS)]
    out_dir = str(hc.runtime.output_dir).replace("\\", "\\\\").replace("'", "\\'")
    pinned = [f"hydra.run.dir='{out_dir}'", "hydra.output_subdir=null",  # the job already wrote its .hydra/
              f"hydra.job.chdir={str(bool(hc.job.chdir)).lower()}"]
    return [*cmd, *flags, *hc.overrides.task, *hydra_overrides, *pinned]


def run_job_in_own_process():
    """Run the current multirun job as a single run in a child process and wait for it; returns the job's
    validation perplexity, read from <job dir>/result.json (written by its rank 0). The child's output goes to
    this terminal; if it fails, this raises with its error."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hc = HydraConfig.get()
    # a result from an earlier sweep into the same directory is not this run's
    (Path(hc.runtime.output_dir) / RESULT_FILE).unlink(missing_ok=True)
    cmd = single_run_command(hc, sys.argv)
    log.info("job %s runs its ranks as a single run: %s", hc.job.num, " ".join(cmd))
    proc = subprocess.Popen(cmd, cwd=get_original_cwd())
    try:
        code = proc.wait()
    except BaseException:  # Ctrl-C: give the run the chance to stop its ranks
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    result = read_result(hc.runtime.output_dir)
    if code != 0:
        error = result.get("error") or "see the output above"
        raise RuntimeError(f"the single run of job {hc.job.num} exited with code {code}: {error}")
    return result.get("val/ppl", float("nan"))
