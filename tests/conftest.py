"""Shared test setup: tiktoken and WikiText-2 from the verified offline copies in ../shared/data."""

import os
from pathlib import Path

import pytest

from gptlab.config.compose import setup

setup()  # the config resolvers, as train.py, eval.py and generate.py register them

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
for var, value in [("TIKTOKEN_CACHE_DIR", SHARED_DATA / "tiktoken-cache"), ("GPTLAB_DATA_DIR", SHARED_DATA)]:
    os.environ[var] = os.environ.get(var) or str(value)


DATA_DIR = Path(os.environ["GPTLAB_DATA_DIR"])  # what conf/paths gives the runs; the library itself reads no variable


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The directory holding wikitext-2/ (read-only: never write here)."""
    return Path(os.environ["GPTLAB_DATA_DIR"])


@pytest.fixture(scope="session")
def token_cache_dir(tmp_path_factory) -> Path:
    """One token cache for the whole session, so each real split is tokenized once."""
    return tmp_path_factory.mktemp("token-cache")


REPO = Path(__file__).resolve().parents[1]
# A training run small enough for tests: gpt_nano, a few steps, small eval.
TINY = [
    "model=gpt_nano", "data.batch_size=4", "trainer.max_steps=6", "trainer.val_check_interval=3",
    "trainer.limit_val_batches=2", "final_limit_batches=3", "callbacks.progress_bar=null",
    "trainer.log_every_n_steps=2",
]


def run_train(run_dir: Path, *overrides: str, cache_dir: Path | None = None, timeout: float = 300, check=True):
    """`python train.py` as a user runs it, with its run directory at run_dir; returns the CompletedProcess."""
    import subprocess
    import sys

    env = dict(os.environ)
    if cache_dir is not None:
        env["GPTLAB_CACHE_DIR"] = str(cache_dir)
    cmd = [sys.executable, str(REPO / "train.py"), f"hydra.run.dir={run_dir}", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, token_cache_dir) -> Path:
    """The run directory of one tiny real training run (gpt_nano, 6 steps), shared by the tests that need a
    trained checkpoint: <dir>/checkpoints/last.ckpt, <dir>/csv/metrics.csv. What it printed is kept beside it,
    in <dir>.console."""
    run_dir = tmp_path_factory.mktemp("tiny-run")
    proc = run_train(run_dir, *TINY, cache_dir=token_cache_dir)
    run_dir.with_suffix(".console").write_text(proc.stdout + proc.stderr)
    return run_dir


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", help="the quick tier: leave out the tests marked full (real "
                                                          "training processes, whole-config walks)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--quick"):
        kept = [item for item in items if item.get_closest_marker("full") is None]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
