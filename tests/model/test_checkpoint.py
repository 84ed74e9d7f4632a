"""Checkpoints are read weights-only: a crafted file that would run code when unpickled is refused (by gptlab's
loaders and by Lightning's own ckpt_path loading), and nothing named inside a checkpoint is ever instantiated. A
checkpoint fits a run's model when the weights' names and shapes and the architecture keys agree."""

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
from gptlab.model.checkpoint import UnsafeCheckpointError, check_compatible, load_checkpoint, load_model
from gptlab.training.checkpoint_io import SafeCheckpointIO
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
    for load in (load_model, lambda p: check_compatible(p, GPTConfig(**SMALL))):
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
    loaded = load_model(tmp_path / "c.ckpt")  # plain data: it loads, and only the model is built from it
    assert torch.equal(loaded.lm_head.weight, module.model.lm_head.weight)
    assert not marker.exists()


def test_truncated_checkpoint_gives_a_clear_error(tmp_path):
    module = GPTLitModule(model=GPTConfig(**SMALL))
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, tmp_path / "c.ckpt")
    (tmp_path / "t.ckpt").write_bytes((tmp_path / "c.ckpt").read_bytes()[:5000])
    with pytest.raises(GptlabError, match=r"t\.ckpt is not a readable checkpoint \(truncated, or not a PyTorch "
                                          r"file\): "):
        load_checkpoint(tmp_path / "t.ckpt")


def save(path, module, **hparams):
    torch.save({"hyper_parameters": {**dict(module.hparams), **hparams}, "state_dict": module.state_dict()}, path)
    return path


def test_checkpoint_of_another_architecture_is_refused_naming_the_differences(tmp_path):
    ckpt = save(tmp_path / "c.ckpt", GPTLitModule(model=GPTConfig(**SMALL)))
    check_compatible(ckpt, GPTConfig(**SMALL, dropout=0.1))  # dropout does not change the weights
    with pytest.raises(GptlabError, match=r"another architecture than this run's: model.n_layer=1 \(this run: 2\), "
                                          r"model.n_embd=32 \(this run: 64\)\."):
        check_compatible(ckpt, GPTConfig(**{**SMALL, "n_layer": 2, "n_embd": 64}))
    # switches that change no shape are refused too: these weights were trained with another activation
    with pytest.raises(GptlabError, match=r"model.mlp=gelu \(this run: relu2\)"):
        check_compatible(ckpt, GPTConfig(**SMALL, mlp="relu2"))
    with pytest.raises(GptlabError, match=r"model.pos_emb=learned \(this run: rope\)"):
        check_compatible(ckpt, GPTConfig(**SMALL, pos_emb="rope"))


def test_compatibility_follows_the_weights_not_a_list_of_keys(tmp_path):
    """The weights decide: a checkpoint whose config says one thing and whose tensors another is refused by its
    tensors' names and shapes, even when every key agrees."""
    module = GPTLitModule(model=GPTConfig(**SMALL))
    state = module.state_dict()
    state["model.transformer.h.0.mlp.c_fc.weight"] = torch.zeros(64, 32)  # not what n_embd=32 makes
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": state}, tmp_path / "c.ckpt")
    with pytest.raises(GptlabError, match=r"weights transformer.h.0.mlp.c_fc.weight"):
        check_compatible(tmp_path / "c.ckpt", GPTConfig(**SMALL))


def test_a_checkpoint_of_another_optimizer_is_refused_by_its_class(tmp_path):
    module = GPTLitModule(model=GPTConfig(**SMALL))
    ckpt = save(tmp_path / "c.ckpt", module)
    muon = "gptlab.training.optim.MuonAdamW"
    check_compatible(ckpt, GPTConfig(**SMALL), muon)  # no optimizer state in this file: nothing to clash
    save(ckpt, module, optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3})
    with pytest.raises(GptlabError, match=r"holds the state of optimizer torch\.optim\.AdamW, this run uses "
                                          r"gptlab\.training\.optim\.MuonAdamW"):
        check_compatible(ckpt, GPTConfig(**SMALL), muon)


def test_a_checkpoint_written_before_the_layers_move_still_loads_and_resumes(tmp_path):
    # Before gptlab was split into layers, checkpoints named gptlab.optim.MuonAdamW and gptlab.schedulers.cosine,
    # and before the speedrun switches were removed they carried qk_norm, value_embed and zero_init_proj (off).
    optimizer = {"_target_": "gptlab.optim.MuonAdamW", "_partial_": True, "lr": 1e-3, "adamw_lr": 1e-3}
    scheduler = {"_target_": "gptlab.schedulers.cosine", "_partial_": True, "total_steps": 10, "warmup_steps": 2}
    module = GPTLitModule(model=SMALL)
    model = {**SMALL, "_target_": "gptlab.model.GPTConfig", "qk_norm": False, "value_embed": False}
    old = {"hyper_parameters": {"model": model, "optimizer": optimizer, "scheduler": scheduler, "compile": False},
           "state_dict": module.state_dict(), "pytorch-lightning_version": L.__version__}
    path = tmp_path / "old.ckpt"
    torch.save(old, path)
    assert torch.equal(load_model(path).transformer.wte.weight, module.model.transformer.wte.weight)
    check_compatible(path, GPTConfig(**SMALL), "gptlab.training.optim.MuonAdamW")  # the same optimizer class
    old["hyper_parameters"]["model"]["value_embed"] = True  # a switch this gptlab no longer has, on: refused
    torch.save(old, path)
    with pytest.raises(GptlabError, match=r"holds a model with model.value_embed=true, which this version"):
        load_model(path)
