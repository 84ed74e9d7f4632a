"""From one CPU to a cluster, on two CPU processes over gloo, each compared with the same run under DDP:

- FSDP (the test-only strategy of cluster_parts.py): training, text samples from the sharded model, the final
  validation and test, full and sharded checkpoints, a resume from a sharded one, eval/generate's loader on both;
- a job that loses a rank and runs its command again, under torchrun or under SLURM (its variables set here as
  srun sets them), requeued: one run directory for all ranks without a pinned
  hydra.run.dir, resumed from its last checkpoint to the weights of the uninterrupted run."""

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_train
from test_ddp import NO_SHA, RUN, small_data_dir  # noqa: F401 (small_data_dir: a fixture)

from gptlab.inference import load_for_inference
from gptlab.model.checkpoint import load_checkpoint, load_model

pytestmark = pytest.mark.full  # real training processes: the full suite, not the quick tier

FSDP = ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.strategy._target_=cluster_parts.CPUFSDPStrategy"]
STEPS = [
    "optimizer=adamw", "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.limit_val_batches=2",
    "final_limit_batches=2", "callbacks.resume_checkpoint.every_n_train_steps=2",
    "callbacks.model_checkpoint.save_top_k=-1",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_data_dir, token_cache_dir):  # noqa: F811
    """The same 4-step run of two processes under DDP, FSDP with full checkpoints and FSDP with sharded ones. The
    full one keeps no best checkpoint, so its final validation and test run on the weights gathered from the
    ranks; the others' on their best checkpoint (step 4's weights, all the same)."""
    base = tmp_path_factory.mktemp("fsdp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
        common = [*RUN, *STEPS, f"data.data_dir={small_data_dir}"]
        out = {}
        sharded = [*FSDP, "trainer.strategy.state_dict_type=sharded"]
        full = [*FSDP, "callbacks.model_checkpoint=null", "+trainer.enable_checkpointing=false"]
        for name, extra in (("ddp", []), ("full", full), ("sharded", sharded)):
            proc = run_train(base / name, *common, *extra, cache_dir=token_cache_dir)
            out[name] = proc.stdout + proc.stderr
        # a sharded run that stopped after its step-2 save, resumed by the same command with resume=true
        resumed = base / "resumed"
        shutil.copytree(base / "sharded", resumed, ignore=shutil.ignore_patterns("result.json"))
        shutil.rmtree(resumed / "checkpoints" / "last.ckpt")
        shutil.copytree(next((resumed / "checkpoints").glob("step2-*")), resumed / "checkpoints" / "last.ckpt")
        proc = run_train(resumed, *common, *sharded, "resume=true", cache_dir=token_cache_dir)
        out["resumed"] = proc.stdout + proc.stderr
    return base, out


def metrics(run_dir: Path, key: str) -> list[float]:
    return [float(r[key]) for r in csv.DictReader(open(run_dir / "csv" / "metrics.csv")) if r.get(key)]


def test_fsdp_trains_and_scores_as_ddp_does(runs):
    base, out = runs
    ddp = {k: metrics(base / "ddp", k) for k in ("train/loss", "val/ppl", "test/ppl")}
    assert len(ddp["train/loss"]) == 4 and len(ddp["val/ppl"]) == 3 and len(ddp["test/ppl"]) == 1
    for name in ("full", "sharded"):
        assert "Starting with 2 processes" in out[name] and "gptlab summary" in out[name]
        for key, expected in ddp.items():  # the losses of every step, the final scores on the best checkpoint
            assert metrics(base / name, key) == pytest.approx(expected, rel=1e-5), (name, key)
        assert "3.32M parameters" in out[name]  # the model's, not one rank's shards
        assert ("checkpoint (none written)" in out[name]) == (name == "full")  # full: scored on gathered weights
        # decoded at each validation by rank 0 from the weights gathered from both (greedy: argmax ties aside, DDP's)
        lines = (base / name / "samples.txt").read_text().splitlines()
        assert [line.split(">>>")[0] for line in lines] == \
            [line.split(">>>")[0] for line in (base / "ddp" / "samples.txt").read_text().splitlines()]
        assert len(lines) == 8


def test_fsdp_checkpoints_hold_the_weights_ddp_trained(runs):
    base, _ = runs
    ddp = load_model(base / "ddp" / "checkpoints" / "last.ckpt").state_dict()
    full, sharded = base / "full" / "checkpoints" / "last.ckpt", base / "sharded" / "checkpoints" / "last.ckpt"
    assert full.is_file() and sorted(p.name for p in sharded.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp",
                                                                                "meta.pt"]
    for ckpt in (full, sharded):
        assert load_checkpoint(ckpt)["global_step"] == 4
        weights = load_model(ckpt).state_dict()
        assert weights.keys() == ddp.keys()
        for k in ddp:  # float noise: a few of AdamW's updates divide by a tiny second moment (a step is ~1e-3)
            torch.testing.assert_close(weights[k], ddp[k], rtol=1e-4, atol=5e-5, msg=lambda m, k=k: f"{k}: {m}")
    loaded = load_for_inference(sharded, device="cpu", precision="32-true")  # what eval.py and generate.py load
    assert loaded.run_config is not None and loaded.model.num_params() == load_model(full).num_params()


def test_a_sharded_run_resumes_from_its_last_checkpoint_to_the_same_weights(runs):
    base, out = runs
    assert "Resuming" in out["resumed"] and "from step 2 to 4" in out["resumed"]
    assert load_checkpoint(base / "resumed" / "checkpoints" / "last.ckpt")["global_step"] == 4
    straight = load_model(base / "sharded" / "checkpoints" / "last.ckpt").state_dict()
    resumed = load_model(base / "resumed" / "checkpoints" / "last.ckpt").state_dict()
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=1e-6, atol=1e-7)
    assert metrics(base / "resumed", "test/ppl")[-1] == pytest.approx(metrics(base / "sharded", "test/ppl")[-1],
                                                                      rel=1e-6)


# --- restarts and requeues: the job's command run again, as torchrun and SLURM do


def restartable(data_dir: Path) -> list[str]:
    """The DDP run of `runs` as a cluster job runs it: no hydra.run.dir, and rank 1 lost after step 3 in the
    first attempt (after the save at step 2)."""
    return [*RUN, *STEPS, f"data.data_dir={data_dir}", "name=job",
            "+callbacks.die._target_=cluster_parts.DieOnce", "+callbacks.die.step=3"]


def job_env(token_cache_dir, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_"))}
    env.update(GPTLAB_CACHE_DIR=str(token_cache_dir), PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).parent), env.get("PYTHONPATH", "")]), **extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_resumed_to_the_uninterrupted_weights(jobs: Path, reference: Path, stamp: str) -> Path:
    """One run directory, named after the job; the restart resumed in it; its weights are the reference's."""
    [run] = list(jobs.iterdir())
    assert run.name == stamp
    assert len([p for p in (run / ".hydra").iterdir() if p.name.startswith("resumed-")]) == 1  # the restart's
    assert sorted(p.name for p in run.glob("*.log")) == ["train.log", "train_ddp_process_1.log"]
    log = (run / "train.log").read_text()
    assert log.count("training 3.32M parameters from step 0") == 1 and f"Resuming {run}" in log
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 4
    resumed = load_model(run / "checkpoints" / "last.ckpt").state_dict()
    straight = load_model(reference / "checkpoints" / "last.ckpt").state_dict()
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    return run


def test_a_torchrun_job_run_again_resumes_in_its_own_directory(runs, tmp_path, small_data_dir,  # noqa: F811
                                                               token_cache_dir):
    """torchrun loses a rank and ends; the job runs the same torchrun command again, as a requeued sbatch job
    does (SLURM_RESTART_COUNT=1). (torchrun's own --max-restarts cannot be tested here: its restarted attempt reads
    the first attempt's addresses from the store torchrun keeps, and Lightning's gloo barrier group fails to
    connect; pytorch/pytorch#135712, #167288.)"""
    base, _ = runs
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--node-rank", "0", "--master-addr",
           "127.0.0.1", "--master-port", str(free_port()), "--rdzv-id", "job-7", "--nproc-per-node", "2",
           "--monitor-interval", "0.2", str(REPO / "train.py"), *restartable(small_data_dir)]
    first = subprocess.run(cmd, cwd=tmp_path, env=job_env(token_cache_dir), capture_output=True, text=True,
                           timeout=400)
    assert first.returncode != 0 and "exitcode: 1" in first.stderr  # rank 1 lost, the job failed
    again = subprocess.run(cmd, cwd=tmp_path, env=job_env(token_cache_dir, SLURM_RESTART_COUNT="1"),
                           capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-4000:]
    assert_resumed_to_the_uninterrupted_weights(tmp_path / "outputs" / "runs" / "job", base / "ddp", "torchrun-job-7")


def test_a_job_slurm_requeues_resumes_in_its_own_directory(runs, tmp_path, small_data_dir,  # noqa: F811
                                                           token_cache_dir):
    base, _ = runs
    port = free_port()

    def start(attempt: int) -> list[subprocess.Popen]:
        """The job's two tasks, with the variables srun gives them (SLURM_RESTART_COUNT: a requeued job's)."""
        tasks = []
        for rank in (0, 1):
            env = job_env(token_cache_dir, SLURM_JOB_ID="4242", SLURM_JOB_NAME="train", SLURM_NTASKS="2",
                          SLURM_NTASKS_PER_NODE="2", SLURM_NNODES="1", SLURM_NODEID="0", SLURM_PROCID=str(rank),
                          SLURM_LOCALID=str(rank), SLURM_RESTART_COUNT=str(attempt), MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
            tasks.append(subprocess.Popen([sys.executable, str(REPO / "train.py"), *restartable(small_data_dir)],
                                          cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True))
        return tasks

    first = start(0)
    assert first[1].wait(timeout=300) == 1  # rank 1 lost after step 3
    time.sleep(1)
    first[0].send_signal(signal.SIGKILL)  # SLURM ends the job's other tasks, then requeues it
    first[0].wait()
    again = start(1)
    outputs = [task.communicate(timeout=300)[0] for task in again]
    assert [task.returncode for task in again] == [0, 0], outputs[0][-4000:]
    assert_resumed_to_the_uninterrupted_weights(tmp_path / "outputs" / "runs" / "job", base / "ddp", "slurm-4242")
