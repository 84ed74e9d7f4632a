"""Every precision this CPU can run on every output head: {32-true, bf16-mixed} × {full, adaptive} through training
(with validation and test), eval.py and generate.py, as real processes. bf16 is only slow on CPUs without bf16
instructions, never wrong, so the matrix runs on any CPU. `precision: auto` is resolved both ways by forcing the
CPU detection with GPTLAB_CPU_BF16."""

import csv
import json
import math
import os
import subprocess
import sys

import lightning as L
import pytest
import torch
from conftest import REPO, TINY, run_train
from lightning.pytorch.plugins.precision import MixedPrecision
from torch.utils.data import DataLoader, TensorDataset

from gptlab.errors import GptlabError
from gptlab.model.precision import CPU_BF16_ENV, apply_precision, resolve_precision
from gptlab.training.module import GPTLitModule, clip_path

pytestmark = pytest.mark.full  # real training processes: the full suite, not the quick tier

MATRIX = [(precision, head) for precision in ("32-true", "bf16-mixed") for head in ("full", "adaptive")]


def run_script(script, *overrides, env_extra=None, cache_dir=None):
    env = {**os.environ, **(env_extra or {})}
    if cache_dir is not None:
        env["GPTLAB_CACHE_DIR"] = str(cache_dir)
    proc = subprocess.run([sys.executable, str(REPO / script), *overrides], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"{script} {' '.join(overrides)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module", params=MATRIX, ids=[f"{p}-{h}" for p, h in MATRIX])
def trained(request, tmp_path_factory, token_cache_dir):
    """A few training steps of gpt_nano with this precision and head, validated twice, then tested."""
    precision, head = request.param
    run_dir = tmp_path_factory.mktemp(f"{precision}-{head}")
    proc = run_train(run_dir, *TINY, f"model.head={head}", f"trainer.precision={precision}", "trainer.max_steps=4",
                     "trainer.val_check_interval=2", "final_limit_batches=2", cache_dir=token_cache_dir)
    return precision, head, run_dir, proc.stdout


def test_training_validation_and_test(trained):
    precision, head, run_dir, out = trained
    assert f"precision {precision}" in out
    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    val = [float(r["val/ppl"]) for r in rows if r.get("val/ppl")]
    test = [float(r["test/ppl"]) for r in rows if r.get("test/ppl")]
    assert losses and all(math.isfinite(x) and 0 < x < 12 for x in losses)  # ln(50257) = 10.8 at the start
    assert len(val) == 3 and len(test) == 1 and all(1 < p < 60000 for p in val + test)
    assert val[1] < val[0]  # it learns


def test_eval_py_in_this_precision_agrees_with_fp32(trained, token_cache_dir, tmp_path):
    precision, head, run_dir, _ = trained
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    reports = {}
    for p in ("32-true", precision):
        out = tmp_path / p
        run_script("eval.py", f"ckpt_path={ckpt}", "split=valid", "limit_windows=4", "batch_size=4",
                   f"precision={p}", f"hydra.run.dir={out}", cache_dir=token_cache_dir)
        reports[p] = json.loads((out / "eval.json").read_text())
    assert reports[precision]["precision"] == precision
    fp32, this = reports["32-true"]["valid"]["ppl"], reports[precision]["valid"]["ppl"]
    assert math.isfinite(this) and this == pytest.approx(fp32, rel=0.02)  # bf16 body, fp32 head and softmax


def test_generate_py_in_this_precision(trained, tmp_path):
    precision, head, run_dir, _ = trained
    prompt = "The history of"
    proc = run_script("generate.py", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"prompt={prompt}",
                      "max_new_tokens=8", "temperature=0", f"precision={precision}", f"hydra.run.dir={tmp_path}")
    assert proc.stdout.startswith(prompt) and len(proc.stdout.strip()) > len(prompt)


@pytest.mark.parametrize(("forced", "expected"), [("1", "bf16-mixed"), ("0", "32-true")])
def test_auto_precision_follows_the_forced_cpu_detection(forced, expected, tmp_path, token_cache_dir, monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, forced)
    assert resolve_precision("auto", "cpu") == expected
    proc = run_train(tmp_path, "model=gpt_nano", "debug=fast", "data.batch_size=2", "callbacks.progress_bar=null",
                     "trainer.precision=auto", "model.head=adaptive", cache_dir=token_cache_dir)
    assert f"precision {expected}" in proc.stdout


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "16-mixed")])
def test_auto_precision_on_a_gpu_takes_bf16_only_where_the_hardware_has_it(native, expected, monkeypatch):
    """A V100 or T4 (no GPU here: torch's answers stand in): torch.cuda.is_bf16_supported() says True there, as
    bf16 is emulated, many times slower than fp16; auto must pick 16-mixed."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)
    assert resolve_precision("auto", "gpu") == expected


def test_a_bad_forced_detection_and_fp16_on_cpu_are_refused(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "yes")
    with pytest.raises(GptlabError, match=CPU_BF16_ENV):
        resolve_precision("auto", "cpu")
    with pytest.raises(GptlabError, match="needs a CUDA GPU"):
        apply_precision(torch.nn.Linear(2, 2), "16-mixed", torch.device("cpu"))


class UpdateSize(L.Callback):
    """The norm of each step's parameter update."""

    def __init__(self):
        self.sizes = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before = [p.detach().clone() for p in pl_module.parameters()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        delta = [p.detach() - b for p, b in zip(pl_module.parameters(), self.before, strict=True)]
        self.sizes.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(d) for d in delta])).item())


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed", "32-true"])
def test_gradient_clipping_with_a_fused_optimizer_clips_the_true_gradients(precision):
    # Lightning refuses to clip for a fused optimizer under mixed precision; gptlab clips itself, unscaling fp16
    # gradients first. 16-mixed is what CUDA runs: here on the CPU through Lightning's own fp16 plugin and scaler.
    # With plain SGD at lr 1 the update is exactly the clipped gradient: its norm must be the clip value.
    torch.manual_seed(0)
    module = GPTLitModule(model={"vocab_size": 64, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 16},
                          optimizer=lambda groups: torch.optim.SGD(groups, lr=1.0, fused=True))
    x = torch.randint(0, 64, (16, 9), generator=torch.Generator().manual_seed(0))
    data = DataLoader(TensorDataset(x[:, :-1], x[:, 1:]), batch_size=4)
    if precision == "16-mixed":
        kwargs = {"plugins": [MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=1024.0))]}
    else:
        kwargs = {"precision": precision}
    sizes = UpdateSize()
    trainer = L.Trainer(accelerator="cpu", max_steps=3, gradient_clip_val=1e-3, callbacks=[sizes], logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, **kwargs)
    trainer.fit(module, train_dataloaders=data)
    assert trainer.precision == precision and clip_path(trainer.strategy, precision, trainer.optimizers[0]) == (
        "lightning" if precision == "32-true" else "manual")
    assert sizes.sizes == pytest.approx([1e-3] * 3, rel=1e-3)


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_clipping_by_value_with_a_fused_optimizer_clips_each_element(precision):
    torch.manual_seed(0)
    module = GPTLitModule(model={"vocab_size": 64, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 16},
                          optimizer=lambda groups: torch.optim.SGD(groups, lr=1.0, fused=True))
    x = torch.randint(0, 64, (8, 9), generator=torch.Generator().manual_seed(0))
    kwargs = {"plugins": [MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=1024.0))]} \
        if precision == "16-mixed" else {"precision": precision}
    moved = []

    class Largest(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.before = [p.detach().clone() for p in pl_module.parameters()]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            moved.append([(p.detach() - b).abs() for p, b in zip(pl_module.parameters(), self.before, strict=True)])

    trainer = L.Trainer(accelerator="cpu", max_steps=2, gradient_clip_val=1e-4, gradient_clip_algorithm="value",
                        callbacks=[Largest()], logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, **kwargs)
    trainer.fit(module, train_dataloaders=DataLoader(TensorDataset(x[:, :-1], x[:, 1:]), batch_size=4))
    for deltas in moved:
        assert max(d.max().item() for d in deltas) == pytest.approx(1e-4, rel=1e-3)  # each element, not the norm
        assert sum((d.float() ** 2).sum().item() for d in deltas) ** 0.5 > 1e-3


def test_clipping_under_fsdp_goes_through_fsdp_whatever_the_precision():
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

    fused = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], fused=True)
    plain = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
    for precision in ("32-true", "bf16-mixed", "16-mixed"):
        for opt in (fused, plain):
            assert clip_path(FSDPStrategy(), precision, opt) == "fsdp"  # a norm over every rank's shards
    assert clip_path(DDPStrategy(), "bf16-mixed", fused) == "manual"
    assert clip_path(DDPStrategy(), "bf16-mixed", plain) == "lightning"
