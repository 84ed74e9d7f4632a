"""W&B logging: offline unless an API key is configured, one offline run per multirun job (read back with wandb's
own reader, `wandb leet inspect`), each finished also when its job fails."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from gptlab.apps.results.runs import read_wandb_run
from gptlab.apps.runtime.wandb import WandbLogger, name_from_overrides, wandb_mode
from gptlab.errors import GptlabError

# A multirun job small enough for tests: debug=tiny made smaller still, validated only after training.
SWEEP_TINY = [
    "model=gpt_nano", "debug=tiny", "model.block_size=32", "data.batch_size=2", "trainer.max_steps=4",
    "trainer.limit_val_batches=0", "final_limit_batches=1",
]


def multirun(sweep_dir: Path, *overrides: str, cache_dir: Path, timeout: float = 600):
    """`python train.py -m ...` as a user runs it, with W&B offline; returns the CompletedProcess."""
    env = {**os.environ, "GPTLAB_CACHE_DIR": str(cache_dir), "WANDB_MODE": "offline"}
    cmd = [sys.executable, str(REPO / "train.py"), "-m", f"hydra.sweep.dir={sweep_dir}", *overrides]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def explain(proc) -> str:
    return f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


def read_offline_run(job_dir: Path) -> dict:
    """The job's one offline W&B run, read with wandb's own reader (gptlab.apps.runs.read_wandb_run)."""
    (run_dir,) = (job_dir / "wandb").glob("offline-run-*")
    return read_wandb_run(run_dir)


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# --- offline unless an API key is configured


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine example.com login user password secret\n")
    monkeypatch.setenv("NETRC", str(netrc))
    return netrc


def test_offline_unless_an_api_key_is_configured(no_credentials, monkeypatch):
    assert wandb_mode(None) == "offline"
    no_credentials.write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")  # `wandb login`
    assert wandb_mode(None) is None  # wandb's default: online
    no_credentials.write_text("")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_mode(None) is None


def test_wandb_mode_and_the_offline_key_win_over_detection(no_credentials, monkeypatch):
    assert wandb_mode(True) == "offline"
    assert wandb_mode(False) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(None) is None  # wandb reads WANDB_MODE itself


OFF = dict(group=None, offline=None, watch=None, watch_log_freq=100)  # conf/logger/wandb.yaml's


def test_logger_passes_offline_mode_and_run_id_to_wandb_init(no_credentials, monkeypatch, tmp_path):
    logger = WandbLogger(name="gpt_nano", project="p", save_dir=str(tmp_path), id="abc123", resume="allow",
                         log_model=True, **OFF)  # Lightning's own offline=True would refuse log_model
    init = logger._wandb_init  # what wandb.init will get (nothing starts before the first log)
    assert (init["mode"], init["name"], init["id"], init["resume"]) == ("offline", "gpt_nano", "abc123", "allow")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    with socket.create_server(("127.0.0.1", 0)) as server:  # a W&B host that answers
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        init = WandbLogger(name=None, project="p", save_dir=str(tmp_path), id=None, resume=None, **OFF)._wandb_init
    assert "mode" not in init and init["id"] is None


def test_an_api_key_without_network_logs_offline_in_one_line(no_credentials, monkeypatch, tmp_path, caplog):
    """wandb would retry for about two minutes, then fail with a traceback."""
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")  # nothing listens there now
    with caplog.at_level("WARNING", logger="gptlab.apps.runtime.wandb"):
        init = WandbLogger(name=None, project="p", save_dir=str(tmp_path), id=None, resume=None, **OFF)._wandb_init
    assert init["mode"] == "offline"
    assert f"W&B: http://127.0.0.1:{port} cannot be reached from this machine: logging offline" in caplog.text
    with pytest.raises(GptlabError, match=r"^logger.wandb.offline=false: http://127.0.0.1:\d+ cannot be reached"):
        WandbLogger(name=None, project="p", save_dir=str(tmp_path), id=None, resume=None, **{**OFF, "offline": False})


def test_run_names_keep_the_swept_overrides():
    overrides = ["model=gpt_nano", "optimizer.lr=0.000123456789", "logger=wandb", "+sweep=optuna", "debug=tiny",
                 "trainer.precision=bf16-mixed"]
    assert name_from_overrides(overrides, ["optimizer.lr", "trainer.precision"]) == \
        "optimizer.lr=0.0001235,trainer.precision=bf16-mixed"
    # without the list of swept keys: everything but where and how the job runs
    assert name_from_overrides(overrides) == "model=gpt_nano,optimizer.lr=0.0001235,trainer.precision=bf16-mixed"


# --- real multiruns


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory, token_cache_dir):
    """A real 2×2 multirun with W&B offline: model.n_layer=1,2 × optimizer.lr=0.001,0.003."""
    sweep_dir = tmp_path_factory.mktemp("grid") / "sweep"
    proc = multirun(sweep_dir, "model.n_layer=1,2", "optimizer.lr=0.001,0.003", *SWEEP_TINY, "logger=wandb",
                    cache_dir=token_cache_dir)
    assert proc.returncode == 0, explain(proc)
    return sweep_dir, proc


@pytest.mark.full
def test_grid_sweep_makes_one_offline_wandb_run_per_job(grid_sweep):
    sweep_dir, proc = grid_sweep
    jobs = sorted(d for d in sweep_dir.iterdir() if d.is_dir() and d.name != "plots")
    assert [d.name for d in jobs] == ["0", "1", "2", "3"]
    runs = [read_offline_run(d) for d in jobs]
    assert len({r["run_id"] for r in runs}) == 4
    assert [r["name"] for r in runs] == [f"model.n_layer={n},optimizer.lr={lr}" for n in (1, 2)
                                         for lr in (0.001, 0.003)]
    assert {r["group"] for r in runs} == {"sweep"}  # the sweep directory's name
    assert all(r["tags"] == ["gpt_nano", "muon"] and r["exit_code"] == 0 for r in runs)
    for run in runs:
        val_ppl = [row["val/ppl"] for row in run["history"] if "val/ppl" in row]
        assert len(val_ppl) == 1 and 1 < val_ppl[0] < 60000  # the final validation
    # The recorded configs (resolved, complete) differ exactly in the swept keys, besides each job's own
    # directory and W&B run id.
    configs = []
    for job, run in zip(jobs, runs, strict=True):
        config = flatten(run["config"])
        assert config["trainer.max_steps"] == 4 and config["data.batch_size"] == 2
        result = json.loads((job / "result.json").read_text())
        assert config["trainer.precision"] == result["precision"] in ("32-true", "bf16-mixed")  # not auto
        assert (job / "csv" / "metrics.csv").is_file()  # logger=wandb keeps the CSV beside it
        configs.append({k: v for k, v in config.items() if not str(v).startswith(str(job)) and v != run["run_id"]
                        and not k.startswith("_wandb")})
    keys = set().union(*configs)
    differing = {k for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1}
    assert differing == {"model.n_layer", "optimizer.lr"}
    assert [(c["model.n_layer"], c["optimizer.lr"]) for c in configs] == [(1, 0.001), (1, 0.003), (2, 0.001),
                                                                           (2, 0.003)]
    assert "4 jobs, 4 completed, 0 failed" in proc.stdout
    # W&B says one line a run, not its banner, history and footer
    synced = [line for line in (proc.stdout + proc.stderr).splitlines() if "wandb sync" in line]
    assert len(synced) == 4 and all(" finished: wandb sync " in line for line in synced)
    assert "wandb:" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_eight_job_grid_of_size_optimizer_and_precision_runs_end_to_end(tmp_path, token_cache_dir):
    # The README's sweep with tiny budgets; bf16-mixed is slow on this CPU (minutes in all).
    sweep_dir = tmp_path / "sweep"
    proc = multirun(sweep_dir, "model=gpt_nano,gpt_micro", "optimizer=adamw,muon", "trainer.precision=32,bf16-mixed",
                    "logger=wandb", "debug=tiny", cache_dir=token_cache_dir, timeout=3600)
    assert proc.returncode == 0, explain(proc)
    runs = [read_offline_run(sweep_dir / str(i)) for i in range(8)]
    assert [r["name"] for r in runs] == [f"model={m},optimizer={o},trainer.precision={p}"
                                         for m in ("gpt_nano", "gpt_micro") for o in ("adamw", "muon")
                                         for p in ("32", "bf16-mixed")]
    assert len({r["run_id"] for r in runs}) == 8 and {r["group"] for r in runs} == {"sweep"}
    assert all(r["exit_code"] == 0 and any("test/ppl" in row for row in r["history"]) for r in runs)
    assert "8 jobs, 8 completed, 0 failed" in proc.stdout
