import pytest
import torch
from torch.nn import functional as F

from gptlab.model import GPT, GPTConfig
from gptlab.model.loss import IGNORE_INDEX, adaptive_loss, fused_linear_cross_entropy


def tiny(**kw):
    cfg = dict(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=32)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg))


@pytest.mark.parametrize("head", ["full", "adaptive"])
def test_changing_future_tokens_leaves_earlier_logits_unchanged(head):
    torch.manual_seed(0)
    model = tiny(head=head, adaptive_cutoffs=[10, 40]).eval()
    idx = torch.randint(0, 97, (2, 16))
    changed = idx.clone()
    changed[:, 9:] = torch.randint(0, 97, (2, 7))
    a, _ = model(idx)
    b, _ = model(changed)
    assert a.shape == (2, 16, 97)
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_gpt2_config_has_124m_parameters_with_tied_weights():
    with torch.device("meta"):
        model = GPT(GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768, bias=True))
    assert model.num_params() == 124_439_808
    assert model.lm_head.weight is model.transformer.wte.weight


def test_flops_per_token_matches_a_hand_count():
    model = tiny(vocab_size=100, block_size=8, n_layer=1, n_head=1, n_embd=4)
    # blocks: qkv 4*12 + proj 4*4 + fc 4*16 + proj 16*4 = 12 * 4^2 = 192 weights; output layer 100*4 = 400
    # 6 FLOPs per weight per token, plus attention 12 * layers * T * d = 12 * 1 * 8 * 4 = 384
    assert model.flops_per_token() == 6 * (192 + 400) + 384


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(n_embd=30, n_head=4), "a multiple of model.n_head"),
        (dict(n_layer=0), "n_layer"),
        (dict(block_size=-1), "block_size"),
        (dict(dropout=1.5), "dropout"),
        (dict(head="mystery"), "head"),
    ],
)
def test_invalid_config_is_refused_at_construction(bad, message):
    cfg = dict(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=32)
    cfg.update(bad)
    with pytest.raises(ValueError, match=message):
        GPTConfig(**cfg)


def test_fused_loss_equals_cross_entropy_in_value_and_gradient():
    torch.manual_seed(0)
    x = torch.randn(300, 32, requires_grad=True)
    w = (torch.randn(1000, 32) * 0.1).requires_grad_()
    t = torch.randint(0, 1000, (300,))
    t[::7] = IGNORE_INDEX
    loss = fused_linear_cross_entropy(x, w, t, chunk=64)
    loss.backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    ref = F.cross_entropy(x @ w.t(), t, ignore_index=IGNORE_INDEX)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gw, w.grad)


def test_fp16_keeps_the_full_heads_softmax_gradient():
    """16-mixed (on CPU torch's fp16 autocast stands in for the GPU's): the fused loss makes its gradients in the
    forward, before the loss scale; softmax / n_valid over 2,048 targets (~1e-8) is below fp16's range, so 92% of
    the output matrix's gradient entries were exactly zero (none in fp32), and AdamW turns zero and tiny alike
    into an update of its own size."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50257, block_size=256, n_layer=1, n_head=2, n_embd=64))
    x, y = torch.randint(0, 50257, (8, 256)), torch.randint(0, 50257, (8, 256))
    _, loss = model(x, y)
    loss.backward()
    ref = model.transformer.wte.weight.grad.clone()
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        _, loss = model(x, y)
    (loss * 2.0**16).backward()  # as Lightning's GradScaler does
    grad = model.transformer.wte.weight.grad / 2.0**16
    assert (grad == 0).float().mean() < 1e-3 and not (ref == 0).any()
    assert (grad - ref).norm() / ref.norm() < 5e-3  # 1.9e-2 before


def test_adaptive_loss_equals_the_module_in_fp32_and_runs_its_matmuls_in_bf16_under_autocast():
    torch.manual_seed(0)
    head = torch.nn.AdaptiveLogSoftmaxWithLoss(32, 500, [50, 200], div_value=4.0)
    x = torch.randn(300, 32, requires_grad=True)
    t = torch.randint(0, 500, (300,))
    t[:5] = torch.tensor([0, 49, 50, 199, 499])  # both sides of each cluster's bounds
    ref = head(x, t).loss
    ref_grads = torch.autograd.grad(ref, [x, *head.parameters()])
    ours = adaptive_loss(head, x, t)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(torch.autograd.grad(ours, [x, *head.parameters()]), ref_grads, strict=True):
        torch.testing.assert_close(a, b)
    with torch.autocast("cpu", torch.bfloat16):
        mixed = adaptive_loss(head, x, t)
    assert mixed.dtype == torch.float32 and mixed != ref  # bf16 matmuls, fp32 log-softmax and loss
    torch.testing.assert_close(mixed, ref, rtol=1e-2, atol=0)


@pytest.mark.parametrize("head", ["full", "adaptive"])
def test_score_agrees_with_the_logits(head):
    torch.manual_seed(0)
    model = tiny(head=head, adaptive_cutoffs=[10, 40]).eval()
    if head == "adaptive":
        model.set_vocab_order(torch.randint(0, 1000, (97,)))
    idx = torch.randint(0, 97, (3, 16))
    y = torch.randint(0, 97, (3, 16))
    y[0, :5] = IGNORE_INDEX
    logits, _ = model(idx)
    ref = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    nll, count, correct = model.score(idx, y)
    assert count.item() == 43
    torch.testing.assert_close(nll.float(), ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(correct, (logits.flatten(0, 1).argmax(-1) == y.flatten()) & (y.flatten() != IGNORE_INDEX))
    _, loss = model(idx, y)
    torch.testing.assert_close(loss, ref / 43, rtol=1e-4, atol=1e-4)


def test_adaptive_score_finds_predictions_in_the_tail_clusters():
    # score() never makes the full log-probabilities: check it against them where the best token is often rare
    torch.manual_seed(1)
    model = tiny(head="adaptive", adaptive_cutoffs=[10, 40]).eval()
    with torch.no_grad():
        model.lm_head.head.weight[10:] *= 30  # the two cluster rows: clusters often beat every frequent token
        for tail in model.lm_head.tail:
            tail[1].weight *= 30  # and a clear best token inside each cluster
    model.set_vocab_order(torch.randint(0, 1000, (97,)))
    idx = torch.randint(0, 97, (8, 16))
    logits, _ = model(idx)
    expected = logits.flatten(0, 1).argmax(-1)
    ranks = model.vocab_rank[expected]
    assert (ranks >= 10).sum() > 20 and (ranks >= 40).sum() > 5 and (ranks < 10).sum() > 5
    # targets: the top-1 token, or the best of the frequent tokens or of the first tail cluster, which is the top-1
    # only when no later cluster holds a likelier token
    flat = logits.flatten(0, 1)
    rank = model.vocab_rank
    best_of = [flat.masked_fill(~m, -float("inf")).argmax(-1) for m in (rank < 10, (rank >= 10) & (rank < 40))]
    choice = torch.randint(0, 3, (128,))
    y = torch.stack([expected, *best_of], dim=1).gather(1, choice[:, None]).view(8, 16)
    nll, count, correct = model.score(idx, y)
    assert torch.equal(correct, expected == y.flatten())
    assert (~correct[choice == 1]).sum() > 5 and (~correct[choice == 2]).sum() > 5 and correct.sum() > 40
    ref = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
    torch.testing.assert_close(nll.float(), ref, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("head", ["full", "adaptive"])
def test_overfitting_one_batch_drives_the_loss_below_0_1(head):
    torch.manual_seed(0)
    model = tiny(head=head, adaptive_cutoffs=[40, 80], adaptive_div=1.0, n_embd=64)
    x = torch.randint(0, 97, (4, 16))
    y = torch.randint(0, 97, (4, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(300):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
