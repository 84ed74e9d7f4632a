"""The speedrun levers (GPTConfig switches, Muon with its Newton-Schulz dtype) and the FLOP counts behind MFU."""

import csv
import re

import pytest
import torch
from conftest import REPO, TINY, run_train
from lightning.fabric.utilities.throughput import measure_flops
from omegaconf import OmegaConf
from torch.nn import functional as F

from gptlab.errors import GptlabError
from gptlab.model import GPT, GPTConfig, KVCache
from gptlab.model.gpt import rotary_tables, rotate
from gptlab.model.hf import to_hf
from gptlab.model.loss import capped, fused_linear_cross_entropy
from gptlab.training.module import param_groups
from gptlab.training.optim import Muon, MuonAdamW, ns_dtype, orthogonalise

LEVERS = [dict(pos_emb="rope"), dict(norm="rmsnorm"), dict(mlp="relu2"), dict(head="full", logit_softcap=15.0),
          dict(pos_emb="rope", norm="rmsnorm", mlp="relu2")]


MUON = dict(lr=0.02, momentum=0.95, nesterov=True, ns_dtype="fp32", adjust_lr_fn=None)


def small(**kw):
    base = dict(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=32, head="adaptive", tie_weights=False,
                adaptive_cutoffs=(50, 100))
    return GPTConfig(**{**base, **kw})


@pytest.mark.parametrize("lever", LEVERS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_each_lever_decodes_with_the_kv_cache_as_without_and_learns(lever):
    torch.manual_seed(0)
    model = GPT(small(**lever))
    idx = torch.randint(0, 300, (2, 20))
    model.eval()
    full = model.logits(model.hidden_states(idx))
    caches = [KVCache() for _ in model.transformer.h]
    parts = [model.hidden_states(idx[:, a:b], caches) for a, b in ((0, 12), (12, 16), (16, 17))]
    torch.testing.assert_close(model.logits(torch.cat(parts, 1)), full[:, :17], atol=1e-5, rtol=1e-5)
    model.train()  # a few steps on one batch: the loss falls, so gradients reach what the lever added
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        _, loss = model(idx, idx.roll(-1, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_rotary_attention_scores_depend_only_on_the_distance_between_positions():
    cfg = small(pos_emb="rope")
    cos, sin = rotary_tables(cfg)
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):
        return float(rotate(q, cos[m], sin[m]) @ rotate(k, cos[n], sin[n]))

    assert score(7, 3) == pytest.approx(score(20, 16), rel=1e-5)
    assert score(7, 3) != pytest.approx(score(7, 5), rel=1e-3)
    assert "wpe" not in GPT(cfg).transformer and not any("rope" in k for k in GPT(cfg).state_dict())


def test_soft_capped_fused_loss_has_autograd_s_value_and_gradients():
    torch.manual_seed(0)
    x = torch.randn(50, 16, requires_grad=True)
    w = torch.randn(100, 16, requires_grad=True)
    t = torch.randint(0, 100, (50,))
    t[3] = -100
    loss = fused_linear_cross_entropy(x * 3, w, t, chunk=16, softcap=5.0)
    gx, gw = torch.autograd.grad(loss, (x, w))
    ref = F.cross_entropy(capped((x * 3) @ w.t(), 5.0), t)
    rx, rw = torch.autograd.grad(ref, (x, w))
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close((gx, gw), (rx, rw))
    model = GPT(small(head="full", logit_softcap=2.0))
    assert model.logits(model.hidden_states(torch.randint(0, 300, (1, 8)))).abs().max() <= 2.0


def test_new_parameters_land_in_the_right_optimizer_groups():
    model = GPT(small(mlp="relu2", norm="rmsnorm"))
    groups = {g["name"]: {id(p) for p in g["params"]} for g in param_groups(model)}
    assert id(model.transformer.h[0].mlp.c_fc.weight) in groups["matrix"]
    assert id(model.transformer.h[0].ln_1.weight) in groups["other"]


def test_levers_that_are_not_gpt2_refuse_export_and_bad_values_name_their_key():
    with pytest.raises(GptlabError, match=r"model.pos_emb=rope.*model.pos_emb=learned"):
        to_hf(GPT(small(head="full", tie_weights=True, pos_emb="rope")))
    with pytest.raises(GptlabError, match="model.logit_softcap"):
        small(logit_softcap=30.0)  # the adaptive head has no logits to cap
    with pytest.raises(GptlabError, match="model.mlp"):
        small(mlp="swiglu")


def test_newton_schulz_in_fp32_orthogonalises_like_float64_and_bf16_like_torch_muon():
    torch.manual_seed(0)
    g = torch.randn(64, 32)
    ref = orthogonalise(g.double(), dtype=torch.float64)
    torch.testing.assert_close(orthogonalise(g, dtype=torch.float32), ref.float(), atol=1e-5, rtol=1e-4)
    s = torch.linalg.svdvals(ref)
    assert 0.6 < s.min() and s.max() < 1.25  # roughly orthogonal: what Muon needs
    # our bf16 step against torch.optim.Muon's (bf16 inside): equal up to bf16 rounding
    p1 = torch.nn.Parameter(torch.randn(32, 64))
    p2 = torch.nn.Parameter(p1.detach().clone())
    start = p1.detach().clone()
    ours = Muon([p1], **{**MUON, "ns_dtype": "bf16"})
    theirs = torch.optim.Muon([p2], lr=0.02, weight_decay=0.0)
    for _ in range(3):
        grad = torch.randn(32, 64)
        p1.grad, p2.grad = grad.clone(), grad.clone()
        ours.step()
        theirs.step()
    moved = (p2.detach() - start).abs().max()
    assert (p1.detach() - p2.detach()).abs().max() < 0.05 * moved


def test_muon_orthogonalises_same_shape_matrices_as_one_batch_like_one_by_one():
    torch.manual_seed(0)
    stack = torch.randn(3, 48, 16, dtype=torch.float64)  # tall: iterated on the transpose
    one_by_one = torch.stack([orthogonalise(g, dtype=torch.float64) for g in stack])
    torch.testing.assert_close(orthogonalise(stack, dtype=torch.float64), one_by_one)
    # an optimizer step over two shapes, two matrices each, against one Muon per matrix
    params = [torch.nn.Parameter(torch.randn(*s)) for s in ((24, 8), (8, 16), (24, 8), (8, 16))]
    alone = [torch.nn.Parameter(p.detach().clone()) for p in params]
    together = Muon(params, **MUON)
    separate = [Muon([p], **MUON) for p in alone]
    for _ in range(2):
        for p, q in zip(params, alone, strict=True):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        together.step()
        for o in separate:
            o.step()
    for p, q in zip(params, alone, strict=True):
        torch.testing.assert_close(p.detach(), q.detach())


def test_newton_schulz_dtype_follows_the_machine(monkeypatch):
    monkeypatch.setenv("GPTLAB_CPU_BF16", "0")
    assert ns_dtype("auto", torch.device("cpu")) == torch.float32  # emulated bf16 is ~100x slower there
    monkeypatch.setenv("GPTLAB_CPU_BF16", "1")
    assert ns_dtype("auto", torch.device("cpu")) == torch.bfloat16
    assert ns_dtype("fp32", torch.device("cpu")) == torch.float32
    model = GPT(small())
    settings = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "optimizer" / "muon.yaml"))
    opt = MuonAdamW(param_groups(model), **{k: v for k, v in settings.items() if not k.startswith("_")} | {
        "ns_dtype": "fp32"})
    _, loss = model(torch.randint(0, 300, (2, 8)), torch.randint(0, 300, (2, 8)))
    loss.backward()
    opt.step()
    assert opt.muon.param_groups[0]["ns_dtype"] == "fp32"


def test_flops_per_token_matches_lightnings_measure_flops():
    cfg = GPTConfig(vocab_size=1000, block_size=64, n_layer=2, n_head=2, n_embd=64, head="full")
    model = GPT(cfg)  # on the CPU: the fused loss asks autocast about its device, which meta is not
    x = torch.randint(0, 1000, (2, 64))
    measured = measure_flops(model, lambda: model(x, x)[1], lambda loss: loss)
    # torch's FLOP counter has no formula for the CPU's fused attention kernel: add attention's 12·L·T·d
    attention = 12 * cfg.n_layer * cfg.block_size * cfg.n_embd
    assert measured / x.numel() + attention == pytest.approx(model.flops_per_token(), rel=1e-3)


def test_adaptive_flops_per_token_counts_each_tail_for_its_share_of_tokens():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=1000, block_size=64, n_layer=2, n_head=2, n_embd=64, head="adaptive",
                    tie_weights=False, adaptive_cutoffs=(100, 400))
    model = GPT(cfg)
    y = torch.randint(0, 1000, (4, 64))
    upper = model.flops_per_token()
    model.set_vocab_order(torch.bincount(y.flatten(), minlength=1000))  # shares of exactly these targets
    assert 0.2 < sum(model.tail_share) < 0.8  # 256 targets, ids drawn from 1000: about half outside the top 100
    measured = measure_flops(model, lambda: model(y, y)[1], lambda loss: loss)
    attention = 12 * cfg.n_layer * cfg.block_size * cfg.n_embd  # not counted on the CPU, as above
    assert measured / y.numel() + attention == pytest.approx(model.flops_per_token(), rel=0.01)
    assert model.flops_per_token() < upper


@pytest.mark.full
def test_train_py_with_every_lever_and_muon_logs_mfu_against_the_measured_peak(tmp_path, token_cache_dir):
    proc = run_train(tmp_path, *TINY, "model.pos_emb=rope", "model.norm=rmsnorm", "model.mlp=relu2", "optimizer=muon",
                     "optimizer.ns_dtype=fp32", "trainer.precision=32-true", "callbacks.throughput.window=2",
                     "callbacks.throughput.skip=1", cache_dir=token_cache_dir)
    assert re.search(r"tokens/s, MFU \d+\.\d%", proc.stdout)  # peak_flops: auto, measured on this CPU
    assert re.search(r"MFU peak   [\d,]+ GFLOP/s per device: best matmul measured on .*float32", proc.stdout)
    rows = list(csv.DictReader(open(tmp_path / "csv" / "metrics.csv")))
    mfu = [float(r["perf/mfu"]) for r in rows if r.get("perf/mfu")]
    assert mfu and all(0 < m < 1 for m in mfu)
    hparams = (tmp_path / "csv" / "hparams.yaml").read_text()
    assert "pos_emb: rope" in hparams and "ns_dtype: fp32" in hparams
