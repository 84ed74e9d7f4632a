"""Resuming: a run killed (SIGKILL) or preempted (SIGTERM) at an arbitrary step and run again with resume=true
ends with the same weights and optimizer state, bit for bit, as a run that was never interrupted."""

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import REPO, run_train
from hydra import compose, initialize_config_dir
from test_budget import Machine, loader, tiny_module

from gptlab.apps.runtime import resume
from gptlab.apps.train import build
from gptlab.config import rundir
from gptlab.data.sampler import ResumableSampler
from gptlab.errors import GptlabError
from gptlab.model.checkpoint import load_checkpoint, save_atomic
from gptlab.training.resilience import ResumeCheckpoint
from gptlab.training.schedulers import WarmupDecay

# Epochs of 4 batches, last.ckpt every 3 steps: resumes land mid-epoch and at epoch ends. Dropout on, so the
# random state matters; deterministic algorithms and one thread, so that reruns can be compared bit for bit; no
# time budget, which would make the learning-rate schedule depend on the wall clock.
RUN = [
    "model=gpt_nano", "model.block_size=32", "model.dropout=0.1", "data.batch_size=2", "trainer.max_steps=12",
    "trainer.max_time=null",
    "+trainer.limit_train_batches=4", "trainer.val_check_interval=8", "trainer.limit_val_batches=1",
    "final_limit_batches=1", "trainer.deterministic=true", "callbacks.progress_bar=null", "callbacks.sample_text=null",
    "callbacks.resume_checkpoint.every_n_train_steps=3", "callbacks.resume_checkpoint.every_n_minutes=null",
    "callbacks.model_checkpoint=null",
]
LONG_RUN = [*RUN, "trainer.max_steps=21"]  # room for a kill, a resume, a preemption and a second resume
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def start_train(run_dir: Path, *overrides: str, cache_dir: Path) -> subprocess.Popen:
    """`python train.py` in the background, its output (stdout and stderr) going to a file: see `output`."""
    env = {**os.environ, **ENV, "GPTLAB_CACHE_DIR": str(cache_dir)}
    cmd = [sys.executable, str(REPO / "train.py"), f"hydra.run.dir={run_dir}", *overrides]
    log = open(run_dir.parent / f"{run_dir.name}-{time.monotonic_ns()}.log", "w+")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log = log
    return proc


def output(proc: subprocess.Popen) -> str:
    proc.log.seek(0)
    return proc.log.read()


def train(run_dir: Path, *overrides: str, cache_dir: Path):
    os.environ.update(ENV)  # run_train passes os.environ on
    try:
        return run_train(run_dir, *overrides, cache_dir=cache_dir)
    finally:
        for key in ENV:
            os.environ.pop(key, None)


def wait_for_saves(proc: subprocess.Popen, ckpt: Path, saves: int, timeout: float = 240) -> None:
    """Wait until `ckpt` has been written `saves` times (each atomic write is a new inode)."""
    seen, deadline = set(), time.monotonic() + timeout
    while len(seen) < saves:
        assert proc.poll() is None, f"the run ended early ({proc.returncode}):\n{output(proc)[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        try:
            seen.add(ckpt.stat().st_ino)
        except FileNotFoundError:
            pass
        time.sleep(0.01)


def assert_same_state(a: Path, b: Path, steps: int) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca["global_step"] == cb["global_step"] == steps
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for k in ca["state_dict"]:
        assert torch.equal(ca["state_dict"][k], cb["state_dict"][k]), f"weights differ: {k}"
    assert_same_tree(ca["optimizer_states"], cb["optimizer_states"], "optimizer_states")  # AdamW or MuonAdamW
    assert ca["lr_schedulers"] == cb["lr_schedulers"]


def assert_same_tree(a, b, where: str) -> None:
    """Equal nested dicts/lists of tensors and plain values (an optimizer's state_dict, whatever its layout)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        for k in a:
            assert_same_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tree(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"optimizer state differs: {where}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, token_cache_dir):
    """reference(*overrides) starts the uninterrupted run in the background (once per overrides) and returns a
    function that waits for it and gives its last.ckpt."""
    runs = {}

    def start(*overrides):
        if overrides not in runs:
            run_dir = tmp_path_factory.mktemp("reference")
            runs[overrides] = start_train(run_dir, *overrides, cache_dir=token_cache_dir), run_dir
        proc, run_dir = runs[overrides]

        def last_ckpt() -> Path:
            assert proc.wait(timeout=600) == 0, output(proc)[-3000:]
            return run_dir / "checkpoints" / "last.ckpt"

        return last_ckpt

    yield start
    for proc, _ in runs.values():
        proc.kill()
        proc.wait()


def kill_after_saves(run_dir: Path, *overrides: str, saves: int, cache_dir: Path) -> int:
    """Start a run, SIGKILL it at a random moment after its checkpoint was written `saves` times (mid-step,
    mid-save or between checkpoints); return the step of the last.ckpt it left."""
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    proc = start_train(run_dir, *overrides, cache_dir=cache_dir)
    try:
        wait_for_saves(proc, ckpt, saves=saves)
        time.sleep(random.uniform(0.0, 0.5))
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return load_checkpoint(ckpt)["global_step"]  # a complete file, wherever the kill landed


@pytest.mark.full
def test_run_killed_mid_training_resumes_to_identical_weights(tmp_path, token_cache_dir, reference):
    finished = reference(*RUN)
    killed_at = kill_after_saves(tmp_path, *RUN, saves=2, cache_dir=token_cache_dir)
    assert 6 <= killed_at < 12
    proc = train(tmp_path, *RUN, "resume=true", cache_dir=token_cache_dir)
    assert f"Resuming {tmp_path}" in proc.stdout + proc.stderr
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert not list(ckpt.parent.glob(".*.tmp"))  # a temp file left by a kill mid-save is gone
    assert_same_state(ckpt, finished(), steps=12)


@pytest.mark.full
def test_a_requeued_job_resumes_when_it_runs_the_same_command_again(tmp_path, token_cache_dir, reference,
                                                                    monkeypatch):
    """SLURM's requeue (a preemption, sbatch --requeue) runs the job's command again with SLURM_RESTART_COUNT=1:
    no resume=true in it, and it continues the run; the same command as a new job is still refused."""
    finished = reference(*RUN)
    kill_after_saves(tmp_path, *RUN, saves=2, cache_dir=token_cache_dir)
    again = run_train(tmp_path, *RUN, cache_dir=token_cache_dir, check=False)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    proc = train(tmp_path, *RUN, cache_dir=token_cache_dir)
    assert f"Resuming {tmp_path}" in proc.stdout + proc.stderr
    assert_same_state(tmp_path / "checkpoints" / "last.ckpt", finished(), steps=12)


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("SLURM_RESTART_COUNT", "2", True), ("TORCHELASTIC_RESTART_COUNT", "1", True),
    ("TORCHELASTIC_RESTART_COUNT", "0", False), (None, None, False)])
def test_resume_defaults_to_true_only_in_a_restarted_job(variable, value, expected, tmp_path, monkeypatch):
    for var in ("SLURM_RESTART_COUNT", "TORCHELASTIC_RESTART_COUNT"):
        monkeypatch.delenv(var, raising=False)
    if variable:
        monkeypatch.setenv(variable, value)
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", "name=x"])
        assert cfg.resume is expected
        assert compose("train", overrides=[f"paths.output_dir={tmp_path}", "name=x", "resume=false"]).resume is False


CLUSTER = ("SLURM_", "TORCHELASTIC_", "WORLD_SIZE", "RANK", "LOCAL_RANK")


@pytest.mark.parametrize(("env", "stamp"), [
    ({"SLURM_JOB_ID": "77", "SLURM_NTASKS": "16"}, "slurm-77"),
    ({"SLURM_JOB_ID": "77", "SLURM_NTASKS": "16", "SLURM_STEP_ID": "2"}, "slurm-77.2"),  # a second srun
    ({"SLURM_JOB_ID": "80", "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3", "SLURM_NTASKS": "2"}, "slurm-77_3"),
    ({"SLURM_JOB_ID": "77", "SLURM_NTASKS": "1"}, None),  # one task (an interactive allocation): its own clock
    ({"TORCHELASTIC_RUN_ID": "gpt2-2x8", "WORLD_SIZE": "16"}, "torchrun-gpt2-2x8"),
    ({"TORCHELASTIC_RUN_ID": "none", "WORLD_SIZE": "16"}, None),  # static rendezvous without --rdzv-id
    ({}, None)])
def test_the_processes_of_a_cluster_job_share_a_run_directory_named_after_it(env, stamp, tmp_path, monkeypatch):
    for var in [v for v in os.environ if v.startswith(CLUSTER)]:
        monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert rundir.job_stamp() == stamp
    assert rundir.run_dir(str(tmp_path), "x", "2026-12-02_12-00-00", False) == str(
        tmp_path / "x" / (stamp or "2026-12-02_12-00-00"))


def test_a_restarted_job_continues_its_own_run_or_starts_it_again_and_other_ranks_write_no_config(tmp_path,
                                                                                                 monkeypatch):
    for var in [v for v in os.environ if v.startswith(CLUSTER)]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    newer = tmp_path / "x" / "2026-12-03_00-00-00"  # another run of the same name, with a checkpoint
    (newer / "checkpoints").mkdir(parents=True)
    (newer / "checkpoints" / "last.ckpt").write_bytes(b"")
    own = tmp_path / "x" / "slurm-77"
    (own / "csv").mkdir(parents=True)
    (own / "csv" / "metrics.csv").write_text("step\n")  # lost before its first checkpoint
    assert rundir.run_dir(str(tmp_path), "x", "t", True) == str(newer)  # resume=true in a new job: the newest
    with pytest.raises(GptlabError, match="holds a run without"):
        rundir.config_subdir(str(own), "t", resume=True)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert rundir.run_dir(str(tmp_path), "x", "t", True) == str(own)  # requeued: its own run, nothing else
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert rundir.config_subdir(str(own), "t", resume=True) is None  # rank 1: no config of its own
    assert rundir.job_name("train") == "train_ddp_process_1"
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert rundir.config_subdir(str(own), "t", resume=True) == ".hydra"  # started again in its directory
    assert rundir.job_name("train") == "train"


@pytest.mark.slow
def test_run_killed_then_preempted_resumes_to_identical_weights(tmp_path, token_cache_dir, reference):
    finished = reference(*LONG_RUN)
    killed_at = kill_after_saves(tmp_path, *LONG_RUN, saves=2, cache_dir=token_cache_dir)
    assert 6 <= killed_at < 21

    # resumed, then SIGTERM (preemption) after its next checkpoint: it saves, says how to resume, exits 143
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    proc = start_train(tmp_path, *LONG_RUN, "resume=true", cache_dir=token_cache_dir)
    try:
        wait_for_saves(proc, ckpt, saves=2)  # the file it resumed from, then its first save
        time.sleep(random.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        proc.kill()
    out = output(proc)
    assert proc.returncode == 143, out[-3000:]
    assert f"Resuming {tmp_path}" in out
    assert "Traceback" not in out
    step = load_checkpoint(ckpt)["global_step"]
    assert f"stopped by SIGTERM; saved {ckpt} at step {step}. Run the same command with resume=true" in out
    assert killed_at < step < 21

    train(tmp_path, *LONG_RUN, "resume=true", cache_dir=token_cache_dir)
    assert not list(ckpt.parent.glob(".*.tmp"))
    assert_same_state(ckpt, finished(), steps=21)


class SignalAtStep(L.Callback):
    """Sends this process a real signal at the end of training step `step`: SIGTERM as a cluster's preemption
    does, SIGINT as Ctrl-C in a terminal does."""

    def __init__(self, signum, step):
        self.signum, self.step = signum, step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def fit_in_process(out_dir: Path, cache_dir: Path, *overrides: str, callbacks=()):
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose("train", overrides=[*RUN, f"paths.output_dir={out_dir}", f"paths.cache_dir={cache_dir}",
                                          "name=resume-test", *overrides])
    L.seed_everything(cfg.seed)
    dm, module, trainer = build(cfg)
    trainer.callbacks[0:0] = list(callbacks)  # before ResumeCheckpoint, which sees the signal the same step
    trainer.fit(module, datamodule=dm, ckpt_path=cfg.ckpt_path)
    return out_dir / "checkpoints" / "last.ckpt"


@pytest.fixture
def deterministic_torch():
    yield
    torch.use_deterministic_algorithms(False)  # Lightning turned it on for the whole process


@pytest.mark.full
def test_preempted_run_resumes_mid_epoch_to_identical_weights(tmp_path, token_cache_dir, deterministic_torch):
    """In this process, a SIGTERM placed exactly: at step 5 (the second batch of the second epoch); resumed from
    the checkpoint it saved, the run ends as an uninterrupted one."""
    short = "trainer.max_steps=8"
    reference = fit_in_process(tmp_path / "reference", token_cache_dir, short)
    with pytest.raises(SystemExit) as stop:
        fit_in_process(tmp_path / "run", token_cache_dir, short, callbacks=[SignalAtStep(signal.SIGTERM, 5)])
    assert stop.value.code == 143
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(ckpt)["global_step"] == 5
    assert fit_in_process(tmp_path / "run", token_cache_dir, short, f"ckpt_path={ckpt}") == ckpt
    assert_same_state(ckpt, reference, steps=8)


@pytest.mark.full
def test_ctrl_c_saves_and_the_run_resumes_to_identical_weights(tmp_path, token_cache_dir, deterministic_torch,
                                                                capfd):
    short = ["trainer.max_steps=8", "trainer.log_every_n_steps=1"]
    reference = fit_in_process(tmp_path / "reference", token_cache_dir, *short)
    with pytest.raises(SystemExit) as stop:
        fit_in_process(tmp_path / "run", token_cache_dir, *short, callbacks=[SignalAtStep(signal.SIGINT, 5)])
    assert stop.value.code == 130  # 128 + SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(ckpt)["global_step"] == 5
    err = capfd.readouterr().err
    assert "Ctrl-C: training stops after this step" in err
    assert f"stopped by Ctrl-C; saved {ckpt} at step 5. Run the same command with resume=true" in err
    assert sorted(train_losses(tmp_path / "run")) == [0, 1, 2, 3, 4]  # its last step logged too
    assert fit_in_process(tmp_path / "run", token_cache_dir, *short, f"ckpt_path={ckpt}") == ckpt
    assert_same_state(ckpt, reference, steps=8)
    # metrics.csv holds the whole run, the steps before the interruption kept, as if it had never stopped
    assert train_losses(tmp_path / "run") == train_losses(tmp_path / "reference")
    assert sorted(train_losses(tmp_path / "run")) == list(range(8))


def train_losses(run_dir: Path) -> dict[int, str]:
    rows = csv.DictReader(open(run_dir / "csv" / "metrics.csv"))
    return {int(r["step"]): r["train/loss"] for r in rows if r.get("train/loss")}


@pytest.mark.full
def test_a_resume_trains_with_the_changed_lr_and_end_step(tmp_path, token_cache_dir, deterministic_torch, caplog):
    """resume with optimizer.lr and trainer.max_steps changed: the schedule is rebuilt from the new values (not the
    checkpoint's), from the step it resumes at, and one line says so."""
    short = ["trainer.max_steps=8", "trainer.log_every_n_steps=1", "scheduler=cosine", "scheduler.warmup_steps=2"]
    ckpt = fit_in_process(tmp_path, token_cache_dir, *short)
    with caplog.at_level("INFO", logger="gptlab.training.module"):
        fit_in_process(tmp_path, token_cache_dir, *short, "trainer.max_steps=12", "optimizer.lr=0.05",
                       f"ckpt_path={ckpt}")
    assert load_checkpoint(ckpt)["global_step"] == 12
    assert "resumed with this run's optimizer and schedule settings (lr changed)" in caplog.text
    schedule = WarmupDecay("cosine", total_steps=12, warmup_steps=2, min_lr_ratio=0.1)
    rows = csv.DictReader(open(tmp_path / "csv" / "metrics.csv"))
    lrs = {int(r["step"]): float(r["lr-MuonAdamW/matrix"]) for r in rows if r.get("lr-MuonAdamW/matrix")}
    resumed = [lrs[s] for s in sorted(lrs) if s >= 8]  # (Lightning logs them one step on after a resume)
    assert resumed == pytest.approx([0.05 * schedule(s) for s in range(8, 12)])


def test_checkpoints_every_n_minutes_follow_the_clock(tmp_path):
    """every_n_minutes reads the callback's clock: a fake one where each step takes 25 s saves every 3 steps."""
    machine = Machine(lambda step: 25.0)
    saves = ResumeCheckpoint(dirpath=str(tmp_path), every_n_train_steps=None, every_n_minutes=1, clock=machine.clock)
    steps = []
    machine.on_save_checkpoint = lambda trainer, pl_module, checkpoint: steps.append(trainer.global_step)
    trainer = L.Trainer(accelerator="cpu", max_steps=10, callbacks=[machine, saves], logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(tiny_module(), train_dataloaders=loader())
    assert steps == [3, 6, 9, 10]  # 75 s, 150 s, 225 s; and at the end of training


def test_resumed_sampler_continues_the_interrupted_order():
    data = list(range(103))
    full = ResumableSampler(data, seed=7)
    epochs = [list(full) for _ in range(2)]  # a new iteration is the next epoch
    assert sorted(epochs[0]) == data and epochs[0] != epochs[1]

    resumed = ResumableSampler(data, seed=7)
    resumed.resume_at(epoch=1, samples=40)
    assert list(resumed) == epochs[1][40:]
    assert len(resumed) == 103  # Lightning counts the resumed epoch from its start
    resumed.set_epoch(1)
    assert list(resumed) == epochs[1]  # the skip applies once

    ranks = [ResumableSampler(data, seed=7, num_replicas=2, rank=r) for r in (0, 1)]
    shares = [list(s) for s in ranks]
    assert len(shares[0]) == len(shares[1]) == 51 and not set(shares[0]) & set(shares[1])


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")  # fails half-way through writing

    path = tmp_path / "last.ckpt"
    save_atomic({"step": 1, "w": torch.ones(3)}, path)
    with pytest.raises(RuntimeError, match="disk full"):
        save_atomic({"step": 2, "w": torch.zeros(1000), "x": Unpicklable()}, path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_resume_finds_the_run_with_the_newest_checkpoint(tmp_path):
    runs, base = tmp_path / "outputs" / "runs", tmp_path / "outputs" / "runs" / "my_run"
    assert rundir.run_dir(str(runs), "my_run", "2025-01-03_00-00-00", True) == str(base / "2025-01-03_00-00-00")
    # none yet: a new one
    for name, mtime in [("2025-01-01_00-00-00", 2000), ("2025-01-02_00-00-00", 1000)]:
        (base / name / "checkpoints").mkdir(parents=True)
        (base / name / "checkpoints" / "last.ckpt").write_bytes(b"")
        os.utime(base / name / "checkpoints" / "last.ckpt", (mtime, mtime))
    (base / "2025-01-02_12-00-00").mkdir()  # a run that failed before its first checkpoint
    assert rundir.run_dir(str(runs), "my_run", "2025-01-03_00-00-00", True) == str(base / "2025-01-01_00-00-00")
    assert rundir.run_dir(str(runs), "my_run", "2025-01-03_00-00-00", False) == str(base / "2025-01-03_00-00-00")
    run = base / "2025-01-01_00-00-00"
    assert rundir.config_subdir(str(run), "t", True) == ".hydra"
    (run / ".hydra").mkdir(exist_ok=True)  # (the claim made above made it)
    (run / ".hydra" / "config.yaml").write_text("seed: 1\n")
    assert rundir.config_subdir(str(run), "t", True) == ".hydra/resumed-t"  # the first config is kept
    with pytest.raises(GptlabError, match="already holds a run"):  # the same directory, not resuming
        rundir.config_subdir(str(run), "t", False)
    assert rundir.config_subdir(str(base / "2025-01-02_12-00-00"), "t", False) == ".hydra"  # nothing there yet


def test_resuming_continues_the_same_wandb_run(tmp_path):
    def prepared(*overrides):
        with initialize_config_dir(str(REPO / "conf"), version_base=None):
            cfg = compose("train", overrides=["logger=wandb", f"paths.output_dir={tmp_path}", "name=x", *overrides])
        resume.prepare(cfg)
        resume.keep_wandb_id(cfg)
        return cfg

    first = prepared()
    run_id = first.logger.wandb.id
    assert len(run_id) == 8 and first.ckpt_path is None
    assert (tmp_path / "wandb_run_id").read_text().strip() == run_id
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    again = prepared("resume=true")
    assert again.ckpt_path == str(tmp_path / "checkpoints" / "last.ckpt")
    assert again.logger.wandb.id == run_id and again.logger.wandb.resume == "allow"
    assert prepared().logger.wandb.id != run_id  # not resuming: a new W&B run
