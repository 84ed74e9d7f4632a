"""generate.py as a user runs it: a prompt, stdin, an empty prompt; without Lightning; and the text samples of a
training run."""

import functools
import io
import os
import subprocess
import sys

import lightning as L
import pytest
import torch
from conftest import REPO
from hydra import compose, initialize_config_dir

from gptlab.apps import generate
from gptlab.data.datamodule import WikiText2DataModule
from gptlab.data.tokenizer import Tokenizer
from gptlab.model.checkpoint import load_model
from gptlab.model.decode import complete
from gptlab.training.callbacks import SampleText
from gptlab.training.module import GPTLitModule

PROMPT = "The history of"
BLOCK_LIGHTNING = ("import sys, runpy, importlib.abc\n"
                   "class Block(importlib.abc.MetaPathFinder):\n"
                   "    def find_spec(self, name, path, target=None):\n"
                   "        if name.split('.')[0] == 'lightning':\n"
                   "            raise ImportError(f'blocked: {name}')\n"
                   "sys.meta_path.insert(0, Block())\n"
                   "sys.argv = sys.argv[1:]\n"
                   "runpy.run_path(sys.argv[0], run_name='__main__')\n")


@pytest.fixture(scope="module")
def model(tiny_run):
    return load_model(tiny_run / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer("gpt2")


def run_generate(*overrides, input=None, cache_dir=None, timeout=300):
    env = dict(os.environ)
    if cache_dir is not None:
        env["GPTLAB_CACHE_DIR"] = str(cache_dir)
    cmd = [sys.executable, str(REPO / "generate.py"), *overrides]
    return subprocess.run(cmd, cwd=REPO, env=env, input=input, capture_output=True, text=True, timeout=timeout)


@pytest.mark.full
def test_generate_py_streams_the_continuation_of_the_prompt(tiny_run, model, tokenizer, tmp_path):
    proc = run_generate(f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}", f"prompt={PROMPT}",
                        "max_new_tokens=12", "temperature=0", "precision=32-true", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    continuation = complete(model, tokenizer, PROMPT, 12, temperature=0)
    assert continuation
    assert PROMPT + continuation + "\n" in proc.stdout


@pytest.mark.full
def test_generate_py_with_an_empty_prompt_fails_clearly(tiny_run, tmp_path):
    proc = run_generate(f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}", "prompt=", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert "error: prompt=''" in proc.stderr and "Traceback" not in proc.stderr


def test_prompts_are_read_from_stdin_one_per_line(tiny_run, model, tokenizer, monkeypatch, capsys):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose("generate", overrides=[f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}",
                                             "max_new_tokens=5", "temperature=0", "num_samples=2",
                                             "precision=32-true"])  # as complete() below: no near-tie can differ
    monkeypatch.setattr(sys, "stdin", io.StringIO("The war\n\nIn 1990\n"))
    generate.run(cfg)
    out = capsys.readouterr().out
    for prompt in ("The war", "In 1990"):
        assert out.count(prompt + complete(model, tokenizer, prompt, 5, temperature=0) + "\n") == 2  # 2 samples
    assert out.count("--- sample 2 of 2") == 2


def test_training_writes_text_samples_at_each_validation(tiny_run):
    text = (tiny_run / "samples.txt").read_text()
    assert text.count("--- step ") == 2  # the tiny run validates at steps 3 and 6 (not the final validation)
    assert "--- step 3, val/loss" in text and "--- step 6, val/loss" in text
    assert text.count("The history of >>>") == 2


def test_text_samples_go_to_a_wandb_table(tmp_path, token_cache_dir, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_SILENT", "true")
    dm = WikiText2DataModule(cache_dir=token_cache_dir, block_size=16, batch_size=2, splits=("train", "valid"))
    module = GPTLitModule(model=dict(block_size=16, n_layer=1, n_head=1, n_embd=16),
                          optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    logger = WandbLogger(project="gptlab-test", save_dir=str(tmp_path), offline=True)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, val_check_interval=1, limit_val_batches=1, logger=logger,
                        callbacks=[SampleText(prompts=["The war"], max_new_tokens=3, temperature=0.0, top_k=None,
                                              seed=0, path=str(tmp_path / "samples.txt"), tokenizer="gpt2")],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    logger.experiment.finish()
    assert (tmp_path / "samples.txt").read_text().count("The war >>>") == 2
    tables = list(tmp_path.glob("wandb/offline-run-*/files/media/table/samples_*.table.json"))
    assert len(tables) == 2  # one per validation, each with every row so far


@pytest.mark.full
def test_generate_py_and_eval_py_apply_a_checkpoint_without_lightning(tiny_run, tmp_path, token_cache_dir):
    """Inference needs no training layer: both commands run with every import of lightning refused."""
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    for script, args in (("generate.py", [f"prompt={PROMPT}", "max_new_tokens=3"]),
                         ("eval.py", ["split=valid", "limit_windows=2", f"paths.cache_dir={token_cache_dir}"])):
        proc = subprocess.run([sys.executable, "-c", BLOCK_LIGHTNING, str(REPO / script), f"ckpt_path={ckpt}", *args,
                               f"hydra.run.dir={tmp_path / script}"], cwd=REPO, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "GPTLAB_FAST_MALLOC": "0"})
        assert proc.returncode == 0, (script, proc.stderr[-3000:])
