"""A NaN training loss (injected at a chosen step) stops training with one line naming the step, keeping the last
good checkpoint; with nan_guard.action=skip that step's update is dropped and training goes on."""

import math
import runpy
import sys

import lightning as L
import pytest
import torch
from conftest import REPO
from hydra import compose, initialize_config_dir

from gptlab.apps.train import build
from gptlab.data import IGNORE_INDEX
from gptlab.errors import GptlabError
from gptlab.model.checkpoint import load_checkpoint
from gptlab.training.module import GPTLitModule
from gptlab.training.resilience import NanGuard

RUN = [
    "model=gpt_nano", "model.block_size=32", "data.batch_size=2", "trainer.max_steps=7", "trainer.max_time=null",
    "+trainer.limit_train_batches=4", "trainer.limit_val_batches=0", "callbacks.progress_bar=null",
    "callbacks.sample_text=null", "callbacks.model_checkpoint=null",
    "callbacks.resume_checkpoint.every_n_train_steps=3", "callbacks.nan_guard.inject_at_step=5",
]


def error_line(capsys, monkeypatch, *args: str) -> str:
    """`python train.py args...` in this process: it fails with one error line and exit code 2; that line."""
    monkeypatch.setattr(sys, "argv", ["train.py", *args])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(REPO / "train.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    return line


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(capsys, monkeypatch, tmp_path,
                                                                          token_cache_dir):
    line = error_line(capsys, monkeypatch, *RUN, f"hydra.run.dir={tmp_path}", f"paths.cache_dir={token_cache_dir}")
    assert line.startswith("error: training loss is NaN or Inf at step 5 (epoch 1, batch 0); stopped before the "
                           "optimizer step, so the weights are not updated and the checkpoints already written are "
                           "kept.")
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 3
    assert all(torch.isfinite(w).all() for w in ckpt["state_dict"].values())


def test_nan_loss_with_skip_drops_that_update_and_goes_on(tmp_path, token_cache_dir):
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose("train", overrides=[*RUN, "callbacks.nan_guard.action=skip", f"paths.output_dir={tmp_path}",
                                          f"paths.cache_dir={token_cache_dir}", "name=nan-test"])
    L.seed_everything(cfg.seed)
    dm, module, trainer = build(cfg)
    trainer.fit(module, datamodule=dm)
    (guard,) = [cb for cb in trainer.callbacks if isinstance(cb, NanGuard)]
    assert guard.skipped_steps == [5]
    assert trainer.global_step == 7
    assert all(torch.isfinite(p).all() for p in module.parameters())
    optimizer = trainer.optimizers[0]  # the default run's MuonAdamW: its AdamW part counts steps
    steps = {int(s["step"]) for o in getattr(optimizer, "inner", [optimizer]) for s in o.state.values() if "step" in s}
    assert steps == {6}  # 7 steps, one of them without an update
    assert math.isfinite(trainer.callback_metrics["train/loss"])


def test_a_diverged_run_is_an_error_at_its_validation_never_a_score(capsys, monkeypatch, tmp_path, token_cache_dir):
    """lr=1e9 turns the weights into NaN and Inf; skip drops the NaN losses' updates, but validation scores every
    token: its loss is NaN, an error naming the step (torchmetrics would drop the NaNs and log a loss of 0)."""
    run = [*RUN[:-1], "optimizer.lr=1e9", "optimizer.adamw_lr=1e9", "callbacks.nan_guard.action=skip",
           "trainer.limit_val_batches=2", "trainer.val_check_interval=3", "callbacks.model_checkpoint=null"]
    line = error_line(capsys, monkeypatch, *run, f"hydra.run.dir={tmp_path}", f"paths.cache_dir={token_cache_dir}")
    assert line.startswith("error: validation loss is NaN or Inf at step 3: the weights have diverged, so no score "
                           "is logged and no checkpoint is chosen on it.")
    assert not (tmp_path / "result.json").exists() or "completed" not in (tmp_path / "result.json").read_text()


def test_a_validation_over_no_tokens_is_an_error_never_an_empty_score(tmp_path):
    """Every target masked (IGNORE_INDEX, as padding is): the sums are 0 and 0; no 0/0 score, nothing to choose a
    checkpoint on."""
    module = GPTLitModule(model={"vocab_size": 64, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 16})
    x = torch.randint(0, 64, (4, 8))
    batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.full_like(x, IGNORE_INDEX)),
                                          batch_size=2)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with pytest.raises(GptlabError, match="validation at step 0 scored no tokens: check trainer.limit_val_batches"):
        trainer.validate(module, batches, verbose=False)
    assert "val/loss" not in trainer.callback_metrics
