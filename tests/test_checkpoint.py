"""Checkpoints are read weights-only: a crafted file that would run code when unpickled is refused (by gptlab's
loaders and by Lightning's own ckpt_path loading), and nothing named inside a checkpoint is ever instantiated."""

import os
import runpy
import sys

import lightning as L
import numpy as np
import pytest
import torch
from conftest import REPO
from torch.utils.data import DataLoader

from gptlab.data import EvalWindows
from gptlab.errors import GptlabError
from gptlab.model import GPTConfig
from gptlab.training.checkpoint import check_compatible, load_module
from gptlab.training.checkpoint_io import SafeCheckpointIO, UnsafeCheckpointError, load_checkpoint
from gptlab.training.module import GPTLitModule

SMALL = {"vocab_size": 50257, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 32}


class RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def crafted(tmp_path):
    """A checkpoint that looks like ours but would create `marker` if it were unpickled; and that marker."""
    marker = tmp_path / "code-ran"
    module = GPTLitModule(model=GPTConfig(**SMALL))
    ckpt = {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(), "x": RunsCode(marker)}
    path = tmp_path / "crafted.ckpt"
    torch.save(ckpt, path)
    return path, marker


def test_crafted_checkpoint_is_refused_without_running_code(crafted):
    path, marker = crafted
    with pytest.raises(UnsafeCheckpointError, match=r"refused to load .*crafted\.ckpt: it holds Python objects "
                                                    r"other than tensors and plain data \(it names posix\.system\)"):
        load_checkpoint(path)
    for load in (load_module, lambda p: check_compatible(p, SMALL)):
        with pytest.raises(UnsafeCheckpointError):
            load(path)
    assert not marker.exists()


def test_lightning_ckpt_path_loading_is_weights_only_too(crafted):
    path, marker = crafted
    module = GPTLitModule(model=GPTConfig(**SMALL))
    windows = DataLoader(EvalWindows(np.arange(100, dtype=np.int64), block_size=16), batch_size=4)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        plugins=[SafeCheckpointIO()])
    with pytest.raises(UnsafeCheckpointError):
        trainer.validate(module, dataloaders=windows, ckpt_path=path, weights_only=False)  # asked: still refused
    assert not marker.exists()


def test_entry_points_report_a_crafted_checkpoint_in_one_line(crafted, capsys, monkeypatch, tmp_path):
    path, marker = crafted
    for entry, args in [("eval", []), ("train", ["model=gpt_nano"])]:
        monkeypatch.setattr(sys, "argv", [f"{entry}.py", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / entry}",
                                          *args])
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(str(REPO / f"{entry}.py"), run_name="__main__")
        err = capsys.readouterr().err
        assert stop.value.code == 2 and "Traceback" not in err
        assert f"error: refused to load {path}: it holds Python objects" in err
    assert not marker.exists()


def test_targets_named_in_a_checkpoint_are_never_instantiated(tmp_path):
    marker = tmp_path / "code-ran"
    module = GPTLitModule(model=GPTConfig(**SMALL))
    hparams = dict(module.hparams, optimizer={"_target_": "os.system", "_args_": [f"touch {marker}"]})
    torch.save({"hyper_parameters": hparams, "state_dict": module.state_dict()}, tmp_path / "c.ckpt")
    loaded = load_module(tmp_path / "c.ckpt")  # plain data: it loads, and only the model is built from it
    assert loaded.optimizer_factory is None
    assert torch.equal(loaded.model.lm_head.weight, module.model.lm_head.weight)
    assert not marker.exists()


def test_truncated_checkpoint_gives_a_clear_error(tmp_path):
    module = GPTLitModule(model=GPTConfig(**SMALL))
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, tmp_path / "c.ckpt")
    (tmp_path / "t.ckpt").write_bytes((tmp_path / "c.ckpt").read_bytes()[:5000])
    with pytest.raises(GptlabError, match=r"t\.ckpt is not a readable checkpoint \(truncated, or not a PyTorch "
                                          r"file\): "):
        load_checkpoint(tmp_path / "t.ckpt")


def test_checkpoint_of_another_shape_is_refused_naming_the_differences(tmp_path):
    module = GPTLitModule(model=GPTConfig(**SMALL))
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, tmp_path / "c.ckpt")
    check_compatible(tmp_path / "c.ckpt", {**SMALL, "dropout": 0.1})  # dropout does not change the weights
    with pytest.raises(GptlabError, match=r"another shape than this run's: n_layer=1 \(this run: 2\), "
                                          r"n_embd=32 \(this run: 64\)\."):
        check_compatible(tmp_path / "c.ckpt", {**SMALL, "n_layer": 2, "n_embd": 64})
    muon = {"_target_": "gptlab.training.optim.MuonAdamW", "_partial_": True}
    check_compatible(tmp_path / "c.ckpt", SMALL, muon)  # no optimizer state in this file: nothing to clash
    hparams = dict(module.hparams, optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3})
    torch.save({"hyper_parameters": hparams, "state_dict": module.state_dict()}, tmp_path / "c.ckpt")
    with pytest.raises(GptlabError, match=r"holds the state of optimizer torch\.optim\.AdamW, this run uses "
                                          r"gptlab\.training\.optim\.MuonAdamW"):
        check_compatible(tmp_path / "c.ckpt", SMALL, muon)


def test_a_checkpoint_written_before_the_layers_move_still_loads_and_resumes(tmp_path):
    # Before gptlab was split into layers, checkpoints named gptlab.optim.MuonAdamW and gptlab.schedulers.cosine.
    optimizer = {"_target_": "gptlab.optim.MuonAdamW", "_partial_": True, "lr": 1e-3, "adamw_lr": 1e-3}
    scheduler = {"_target_": "gptlab.schedulers.cosine", "_partial_": True, "total_steps": 10, "warmup_steps": 2}
    module = GPTLitModule(model=SMALL)
    old = {"hyper_parameters": {"model": SMALL, "optimizer": optimizer, "scheduler": scheduler, "compile": False},
           "state_dict": module.state_dict(), "pytorch-lightning_version": L.__version__}
    path = tmp_path / "old.ckpt"
    torch.save(old, path)
    loaded = GPTLitModule.load_from_checkpoint(path)  # as Lightning resumes a run: the optimizer is built
    built = loaded.configure_optimizers()
    assert type(built["optimizer"]).__name__ == "MuonAdamW"
    assert type(built["lr_scheduler"]["scheduler"].lr_lambdas[0]).__name__ == "WarmupDecay"
    assert torch.equal(load_module(path).model.transformer.wte.weight, module.model.transformer.wte.weight)
    check_compatible(path, SMALL, {"_target_": "gptlab.training.optim.MuonAdamW"})  # the same optimizer
