"""Where things are: the project (`repo_root`) and run directories, decided while Hydra composes the config (the
`gptlab_run_dir` and `gptlab_config_subdir` resolvers of conf/train.yaml), before anything is written.

Runs live in outputs/runs/<name>/<time>/. With resume=true the run directory is instead the one of
outputs/runs/<name>/ whose checkpoints/last.ckpt was written last; with none there, a new run starts, so the same
command works for the first launch and for every restart. A rerun into an existing run directory keeps that run's
.hydra/config.yaml and writes its own config to .hydra/resumed-<time>/; a directory that holds a run is refused
unless resume=true.
"""

import fcntl
import json
import os
import time
from pathlib import Path

from gptlab.config.declare import RunName
from gptlab.errors import GptlabError

LAST = Path("checkpoints") / "last.ckpt"
SHARDED_META = "meta.pt"  # Lightning's FSDP sharded checkpoint: a directory of shards and this file of the rest
CLAIM = Path(".hydra") / "run.lock"
STARTED = time.time()  # files older than this were not written by this process (imported as the config is composed)
_claims = {}  # the lock files of the run directories this process holds, open until it exits


def repo_root() -> Path:
    """The project root (the folder above src/ holding pyproject.toml) when running from a source checkout, else
    the working directory."""
    root = next((p for p in Path(__file__).resolve().parents if (p / "src" / "gptlab").is_dir()), None)
    return root if root is not None and (root / "pyproject.toml").is_file() else Path.cwd()


def check_name(name) -> str:
    """`name` is a run's folder under outputs/runs: a plain, non-empty name."""
    text = "" if name is None else str(name)
    if not RunName.accepts(name):
        raise GptlabError(f"name={text!r}: a run name must be a plain, non-empty folder name (no / or \\, not . or "
                          f"..), e.g. name=wt2_mini")
    return text


RESTART_COUNTS = ("SLURM_RESTART_COUNT", "TORCHELASTIC_RESTART_COUNT")  # set by a requeue, by torchrun's restarts


def restarted() -> bool:
    """Whether this process is a cluster's restart of a job that ran before: SLURM's requeue (sbatch --requeue, a
    preemption) or torchrun's --max-restarts run the same command again, which then resumes (resume's default)."""
    return any(os.environ.get(var, "0").strip() not in ("", "0") for var in RESTART_COUNTS)


def is_checkpoint(path) -> bool:
    """Whether `path` is a checkpoint: a file, or the directory of an FSDP sharded checkpoint
    (trainer.strategy.state_dict_type=sharded)."""
    path = Path(path)
    return path.is_file() or (path / SHARDED_META).is_file()


def launched_rank() -> str:
    """This process's rank as the launcher that started it says ("0" for a process started alone)."""
    return next((os.environ[v] for v in ("RANK", "SLURM_PROCID", "LOCAL_RANK") if v in os.environ), "0")


def job_name(config_name: str) -> str:
    """The name of this process's log: the config's (train.log), or for a rank other than 0 that torchrun or SLURM
    started, train_ddp_process_<rank>.log, the name Lightning gives the logs of the ranks it starts itself."""
    rank = launched_rank()
    return config_name if rank == "0" else f"{config_name}_ddp_process_{rank}"


def job_stamp() -> str | None:
    """The run directory's name for a job whose processes a cluster starts (srun's tasks, torchrun's workers): the
    job's id, which every process on every node shares, where each one's clock would give each its own ${now}; the
    same again when the job is requeued or restarted, so that it resumes there. None for a process started alone,
    and under torchrun without `--rdzv-id` (its id is then "none"; `--standalone` draws a new one each time, so a
    requeued job that runs torchrun needs `--rdzv-id`, e.g. $SLURM_JOB_ID, to find its run again)."""
    env = os.environ
    if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS") or 1) > 1:
        job = (f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}" if env.get("SLURM_ARRAY_TASK_ID")
               else env["SLURM_JOB_ID"])
        step = env.get("SLURM_STEP_ID", "0")
        return f"slurm-{job}" + (f".{step}" if step not in ("", "0") else "")  # a second srun: a run of its own
    run_id = env.get("TORCHELASTIC_RUN_ID", "")
    if run_id not in ("", "none") and int(env.get("WORLD_SIZE") or 1) > 1:
        return f"torchrun-{run_id}"
    return None


def run_dir(base: str, name, stamp: str, resume) -> str:
    """`base/name/stamp` for a new run (the stamp a cluster job's id, `job_stamp`, when it has one); with resume,
    the run under `base/name` whose last.ckpt is newest, if any; a restarted cluster job, its own run only."""
    base = Path(base) / check_name(name)
    own = base / (job_stamp() or stamp)
    if restarted() and job_stamp():
        return str(own)
    if str(resume).lower() == "true":
        runs = [d for d in base.glob("*") if is_checkpoint(d / LAST)]
        if runs:
            return str(max(runs, key=lambda d: (d / LAST).stat().st_mtime))
    return str(own)


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


# What a run directory holds (and Hydra's log, <job>.log): a directory holding anything else is not a run's
RUN_FILES = {".hydra", "checkpoints", "csv", "wandb", "result.json", "samples.txt", "wandb_run_id", "plots"}


def foreign_files(output_dir) -> list[str]:
    """The names in `output_dir` that no run writes (sorted), e.g. a project's README.md."""
    d = Path(output_dir or ".")
    return sorted(p.name for p in d.iterdir() if p.name not in RUN_FILES and p.suffix != ".log") if d.is_dir() else []


def config_subdir(output_dir: str, stamp: str, resume=False) -> str | None:
    """Where Hydra saves this invocation's config: .hydra, or .hydra/resumed-<stamp> when the run directory
    already has one (a resumed run), so the config the run was started with is never overwritten; None (no copy)
    in ranks other than 0 that torchrun or SLURM started, which compose the same config (as Lightning's own
    launcher does for its ranks). Refused, with nothing written into it: a directory holding files no run writes
    (the project's root, a source folder), one that holds a run unless resume=true, a run without last.ckpt with
    resume=true (but a restarted cluster job killed before its first save starts again), and one another process
    holds. (Hydra resolves this before it writes anything of the job but after it has opened its log file.)"""
    resume = str(resume).lower() == "true"
    if foreign := foreign_files(output_dir):
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise _refused(output_dir, f"hydra.run.dir={output_dir} holds files no run writes ({shown}): a run writes "
                                   f"its checkpoints, metrics and logs into its directory, so it must be a new one or "
                                   f"a run's. Choose a new directory, or leave hydra.run.dir unset "
                                   f"(outputs/runs/<name>/<time>)")
    if not resume and holds_a_run(output_dir):
        raise _refused(output_dir, f"hydra.run.dir={output_dir} already holds a run (checkpoints or metrics): "
                                   f"nothing was written. Add resume=true to continue that run, or choose another "
                                   f"directory (by default every run gets its own, outputs/runs/<name>/<time>)")
    if resume and not restarted() and not is_checkpoint(Path(output_dir) / LAST) and holds_a_run(output_dir):
        raise _refused(output_dir, f"resume=true: hydra.run.dir={output_dir} holds a run without {LAST} to resume "
                                   f"from (it ended before its first one, or ran with debug=fast): nothing was "
                                   f"written. Choose another directory, or delete that one to start it again")
    if launched_rank() != "0":
        return None
    taken = (Path(output_dir) / ".hydra" / "config.yaml").is_file()
    claim(output_dir)
    return f".hydra/resumed-{stamp}" if taken else ".hydra"


def _refused(output_dir, message: str) -> GptlabError:
    """The refusal of a run directory, while Hydra sets the run up: the log file Hydra just opened there goes."""
    discard_refused_run(output_dir, STARTED)
    return GptlabError(message)


def claim(output_dir) -> None:
    """Hold `output_dir` for this process, so that two runs never write into one directory (two started in the same
    second with the same name, or two resumes of one run): a lock on <dir>/.hydra/run.lock that the system lets go
    when the process ends, however it ends. Only the first rank claims (config_subdir): ranks started by torchrun
    or SLURM compose the same config with the same directory."""
    path = (Path(output_dir) / CLAIM).absolute()
    if path in _claims:  # Hydra may resolve the directory more than once
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(path, "a")  # noqa: SIM115 (held open until the process ends)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise _refused(output_dir, f"hydra.run.dir={output_dir} is in use by another run, still running: nothing "
                                   f"was written. Wait for it to end, or choose another name or directory") from None
    _claims[path] = lock


def discard_refused_run(output_dir, since: float) -> bool:
    """Remove what Hydra wrote for a run that was refused before it began: its .hydra/ config and its log, and the
    directory itself when that leaves it empty. Only files written since `since` (this process's start) are
    removed; in a directory that holds a run (a refused resume), only this invocation's config folder
    (.hydra/resumed-<time>/), the lines it logged staying in the run's log. Returns whether the directory went."""
    d = Path(output_dir)
    if not d.is_dir():
        return False
    files = [p for p in d.rglob("*") if p.is_file() or p.is_symlink()]
    new = [p for p in files if p.stat().st_mtime >= since]
    whole = all(p in new and (p.relative_to(d).parts[0] == ".hydra" or (p.parent == d and p.suffix == ".log"))
                for p in files)
    # in a directory that was not new: this run's config folder (.hydra/resumed-<time>), and a log it created
    # (empty: it was refused at once)
    def this_runs(p):
        parts = p.relative_to(d).parts
        return (len(parts) > 2 and parts[0] == ".hydra" and parts[1].startswith("resumed-")) or (
            len(parts) == 1 and p.suffix == ".log" and p.stat().st_size == 0)

    for p in files if whole else [p for p in new if this_runs(p)]:
        p.unlink()
    dirs = [p for p in d.rglob("*") if p.is_dir() and (whole or p.relative_to(d).parts[0] == ".hydra")]
    for sub in sorted(dirs, key=lambda p: -len(p.parts)):  # the deepest first
        if not any(sub.iterdir()):
            sub.rmdir()
    if whole:
        d.rmdir()
    return whole
