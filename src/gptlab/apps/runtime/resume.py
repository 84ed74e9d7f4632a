"""Resuming a run: `python train.py name=my_run resume=true` continues the latest run named my_run.

The run directory is found while the config is composed (gptlab/config/rundir.py); here, before the run is built,
training is pointed at its checkpoints/last.ckpt (weights, optimizer, scheduler, step, and the position in the
data order: data/sampler.py), and the W&B run id kept in <run dir>/wandb_run_id is reused, so the W&B run
continues too. `ckpt_path=<file>` continues from a given checkpoint instead.
"""

import logging
import secrets
import string
import warnings
from pathlib import Path

from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import OmegaConf, open_dict

from gptlab.config.rundir import LAST, is_checkpoint

log = logging.getLogger(__name__)

WANDB_ID_FILE = "wandb_run_id"


def prepare(cfg) -> None:
    """Before building the run: with resume=true and no ckpt_path, set ckpt_path to this run's last.ckpt (when
    there is one); give a W&B logger its run id (written down by `keep_wandb_id` once the run is built)."""
    out = Path(cfg.paths.output_dir)
    resuming = False
    if cfg.get("resume") and not cfg.get("ckpt_path"):
        last = out / LAST
        if is_checkpoint(last):
            with open_dict(cfg):
                cfg.ckpt_path = str(last)
            resuming = True
            log.info("Resuming %s from %s", out, last)
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")  # ours
            for change in config_changes(cfg, out):
                log.warning("Resuming with a changed config: %s", change)
        else:
            log.info("resume=true: no checkpoint in %s yet, starting a new run", out)
    wandb = (cfg.get("logger") or {}).get("wandb")
    if wandb and "_target_" in wandb and rank_zero_only.rank == 0:
        run_id = wandb_run_id(out, wandb.get("id"), resuming)
        with open_dict(cfg):
            cfg.logger.wandb.id = run_id
            cfg.logger.wandb.resume = wandb.get("resume") or "allow"


def wandb_run_id(out: Path, configured: str | None, resuming: bool) -> str:
    """The configured id, else the one stored in <out>/wandb_run_id when resuming, else a new one."""
    path = out / WANDB_ID_FILE
    run_id = configured
    if run_id is None and resuming and path.is_file():
        run_id = path.read_text().strip() or None
    if run_id is None:
        run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    return str(run_id)


def keep_wandb_id(cfg) -> None:
    """Store the W&B run id in the run directory, for the next resume (once the run is built: a refused run
    writes nothing)."""
    wandb = (cfg.get("logger") or {}).get("wandb")
    if wandb and wandb.get("id") and rank_zero_only.rank == 0:
        out = Path(cfg.paths.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / WANDB_ID_FILE).write_text(f"{wandb.id}\n")


def config_changes(cfg, out: Path, limit: int = 10) -> list[str]:
    """`key: old -> new` for each value that differs from the config the run in `out` was started with."""
    saved = out / ".hydra" / "config.yaml"
    if not saved.is_file():
        return []
    old, new = _flat(OmegaConf.to_container(OmegaConf.load(saved))), _flat(OmegaConf.to_container(cfg))
    skip = ("resume", "ckpt_path", "logger.wandb.id", "logger.wandb.resume")
    keys = sorted(k for k in old.keys() | new.keys() if k not in skip and old.get(k) != new.get(k))
    changes = [f"{k}: {old.get(k, '(absent)')} -> {new.get(k, '(absent)')}" for k in keys]
    return changes[:limit] + ([f"... and {len(changes) - limit} more"] if len(changes) > limit else [])


def _flat(d, prefix="") -> dict:
    flat = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict) and v:
            flat.update(_flat(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat

