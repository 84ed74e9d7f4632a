"""Resuming a run: `python train.py name=my_run resume=true` continues the latest run named my_run.

Runs live in outputs/runs/<name>/<time>/. With resume=true the run directory is instead the one of
outputs/runs/<name>/ whose checkpoints/last.ckpt was written last (the `gptlab_run_dir` resolver in
conf/train.yaml), and training continues from that checkpoint: weights, optimizer, scheduler, step, and the
position in the data order (see sampler.py). With none there, it starts afresh in a new directory, so the same
command works for the first launch and for every restart. `ckpt_path=<file>` continues from a given checkpoint
instead. The W&B run id is kept in <run dir>/wandb_run_id and reused, so the W&B run continues too.

A rerun into an existing run directory keeps that run's .hydra/config.yaml and writes its own config to
.hydra/resumed-<time>/ (the `gptlab_config_subdir` resolver).
"""

import json
import logging
import secrets
import string
import warnings
from pathlib import Path

from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import OmegaConf, open_dict

from gptlab.errors import GptlabError

log = logging.getLogger(__name__)

LAST = Path("checkpoints") / "last.ckpt"
WANDB_ID_FILE = "wandb_run_id"


def check_name(name) -> str:
    """`name` is a run's folder under outputs/runs: a plain, non-empty name."""
    text = "" if name is None else str(name)
    if not text.strip() or any(c in text for c in "/\\") or text.strip(".") == "":
        raise GptlabError(f"name={text!r}: a run name must be a plain, non-empty folder name (no / or \\, not . or "
                          f"..), e.g. name=wt2_mini")
    return text


def run_dir(base: str, name, stamp: str, resume) -> str:
    """`base/name/stamp` for a new run; with resume, the run under `base/name` whose last.ckpt is newest, if any."""
    base = Path(base) / check_name(name)
    if str(resume).lower() == "true":
        runs = [d for d in base.glob("*") if (d / LAST).is_file()]
        if runs:
            return str(max(runs, key=lambda d: (d / LAST).stat().st_mtime))
    return str(base / stamp)


def holds_a_run(output_dir) -> bool:
    """Whether `output_dir` holds what a run leaves: checkpoints, metrics, samples, or the result of a run that did
    not fail (a run refused before it began leaves only a failed result.json: its directory may be reused)."""
    d = Path(output_dir)
    if (d / "checkpoints").is_dir() and any((d / "checkpoints").iterdir()):
        return True
    if any((d / f).is_file() for f in ("csv/metrics.csv", "samples.txt")):
        return True
    try:
        return json.loads((d / "result.json").read_text()).get("status") != "failed"
    except (OSError, ValueError, AttributeError):
        return (d / "result.json").exists()


def config_subdir(output_dir: str, stamp: str, resume=False) -> str:
    """Where Hydra saves this invocation's config: .hydra, or .hydra/resumed-<stamp> when the run directory
    already has one (a resumed run), so the config the run was started with is never overwritten. A directory
    that holds a run's checkpoints or metrics is refused unless resume=true: nothing is written into it. (Hydra
    resolves this before it writes anything of the job but after it has opened its log file.)"""
    if str(resume).lower() != "true" and holds_a_run(output_dir):
        raise GptlabError(f"hydra.run.dir={output_dir} already holds a run (checkpoints or metrics): nothing was "
                          f"written. Add resume=true to continue that run, or choose another directory (by default "
                          f"every run gets its own, outputs/runs/<name>/<time>)")
    taken = (Path(output_dir) / ".hydra" / "config.yaml").is_file()
    return f".hydra/resumed-{stamp}" if taken else ".hydra"


def prepare(cfg) -> None:
    """Before building the run: with resume=true and no ckpt_path, set ckpt_path to this run's last.ckpt (when
    there is one); give a W&B logger its run id, stored in the run directory for the next resume."""
    out = Path(cfg.paths.output_dir)
    resuming = False
    if cfg.get("resume") and not cfg.get("ckpt_path"):
        last = out / LAST
        if last.is_file():
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
    """The configured id, else the stored one when resuming, else a new one; stored in <out>/wandb_run_id."""
    path = out / WANDB_ID_FILE
    run_id = configured
    if run_id is None and resuming and path.is_file():
        run_id = path.read_text().strip() or None
    if run_id is None:
        run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return str(run_id)


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


def discard_refused_run(output_dir, since: float) -> bool:
    """Remove what Hydra wrote for a run that was refused before it began: its .hydra/ config and its log,
    and the directory itself when that leaves it empty. Only files written since `since` (this process's start)
    are removed, and nothing at all when the directory holds anything else. Returns whether it removed it."""
    d = Path(output_dir)
    if not d.is_dir():
        return False
    files = [p for p in d.rglob("*") if p.is_file() or p.is_symlink()]
    ours = all(p.stat().st_mtime >= since and (p.relative_to(d).parts[0] == ".hydra" or
                                               (p.parent == d and p.suffix == ".log"))
               for p in files)
    if not ours:
        return False
    for p in files:
        p.unlink()
    for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        sub.rmdir()
    d.rmdir()
    return True
