"""eval.py as a user runs it: the table and its report, and a refusal without a checkpoint."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from gptlab.model.checkpoint import load_model

pytestmark = pytest.mark.full  # real training processes: the full suite, not the quick tier


def run_script(script, *overrides, cache_dir=None, timeout=300):
    env = dict(os.environ)
    if cache_dir is not None:
        env["GPTLAB_CACHE_DIR"] = str(cache_dir)
    cmd = [sys.executable, str(REPO / script), *overrides]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_eval_py_reports_token_and_word_perplexity_and_bits_per_byte(tiny_run, token_cache_dir, tmp_path):
    proc = run_script("eval.py", f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}", "limit_windows=2",
                      "batch_size=2", "stride=64", "precision=32-true", f"hydra.run.dir={tmp_path}",
                      cache_dir=token_cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "word ppl" in proc.stdout and "bits/byte" in proc.stdout
    report = json.loads((tmp_path / "eval.json").read_text())
    for split in ("valid", "test"):
        assert split in proc.stdout
        assert report[split]["tokens"] == 128 + 64  # the second window scores only its last stride tokens
        assert {"loss", "ppl", "word_ppl", "bpb"} <= report[split].keys()
    assert report["stride"] == 64


def test_eval_py_without_a_checkpoint_fails_clearly(tmp_path):
    proc = run_script("eval.py", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert "error: ckpt_path=null: give the checkpoint to use" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nowhere.ckpt")
