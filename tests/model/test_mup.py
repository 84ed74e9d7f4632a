"""µP (model.mup_base_width): the coordinate check, the test µP implementations are judged by (Tensor Programs V,
and the `mup` package's coord_check): train models of four widths a few AdamW steps at one learning rate, on real
WikiText-2 text, and measure each layer's activations. Under standard parametrization they grow with the width;
under µP they stay the same size."""

import math

import numpy as np
import pytest
import torch
from conftest import DATA_DIR

from gptlab.data.corpus import WikiText2
from gptlab.errors import GptlabError
from gptlab.model.gpt import GPT, GPTConfig
from gptlab.model.hf import check_gpt2_architecture
from gptlab.training.module import param_groups
from gptlab.training.optim import MuonAdamW, mup_learning_rates

WIDTHS = (32, 64, 128, 256)


@pytest.fixture(scope="module")
def batch(token_cache_dir):
    ids = WikiText2(splits=["valid"], data_dir=DATA_DIR, cache_dir=token_cache_dir).ids("valid")
    x = torch.from_numpy(np.asarray(ids[: 8 * 65], dtype=np.int64)).view(8, 65)
    return x[:, :-1], x[:, 1:]


def activation_sizes(width: int, base: int | None, batch, steps: int = 3, lr: float = 1e-2) -> dict[str, float]:
    """RMS of the last block's output and of the logits after `steps` AdamW steps on one batch."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50257, block_size=64, n_layer=2, n_head=2, n_embd=width, mup_base_width=base)
    model = GPT(config)
    optimizer = torch.optim.AdamW(param_groups(model), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    mup_learning_rates(optimizer, config)
    x, y = batch
    for _ in range(steps):
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    out = {}
    hook = model.transformer.h[-1].register_forward_hook(lambda module, inputs, output: out.update(block=output))
    with torch.no_grad():
        logits = model.logits(model.hidden_states(x))
    hook.remove()
    return {"last block": out["block"].pow(2).mean().sqrt().item(), "logits": logits.pow(2).mean().sqrt().item()}


def test_coordinate_check_activations_stay_flat_across_widths_under_mup_and_grow_without(batch):
    for base, flat in ((32, True), (None, False)):
        sizes = [activation_sizes(w, base, batch) for w in WIDTHS]
        for layer in ("last block", "logits"):
            growth = sizes[-1][layer] / sizes[0][layer]  # 8 times the width
            if flat:  # measured: last block 0.22 -> 0.16, logits 0.64 -> 0.58
                assert 0.5 < growth < 1.5, (layer, [s[layer] for s in sizes])
            else:  # measured: last block 0.22 -> 11.8, logits 0.64 -> 4.4
                assert growth > 4, (layer, [s[layer] for s in sizes])


def test_mup_at_its_base_width_is_the_standard_model_and_scales_the_rest():
    config = GPTConfig(vocab_size=100, block_size=16, n_layer=2, n_head=2, n_embd=32)
    torch.manual_seed(0)
    standard = GPT(config)
    torch.manual_seed(0)
    base = GPT(GPTConfig(**{**config.__dict__, "mup_base_width": 32}))
    x = torch.randint(0, 100, (2, 16))
    torch.testing.assert_close(base.hidden_states(x), standard.hidden_states(x))  # the same function at width m=1
    wide = GPTConfig(**{**config.__dict__, "n_embd": 128, "mup_base_width": 32})
    torch.manual_seed(0)
    model = GPT(wide)
    c_fc = model.transformer.h[0].mlp.c_fc.weight
    assert c_fc.std().item() == pytest.approx(0.02 / 2, rel=0.05)  # 1/√4 of init_std
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)  # embeddings: as at the base
    assert model.transformer.h[0].attn.scale == pytest.approx(math.sqrt(16) / 64)  # 1/head size, √16 at base
    adamw = torch.optim.AdamW(param_groups(model), lr=1e-2)
    mup_learning_rates(adamw, wide)
    assert {g["name"]: g["lr"] for g in adamw.param_groups} == {"matrix": 1e-2 / 4, "embedding": 1e-2,
                                                                "other": 1e-2}
    muon = MuonAdamW(param_groups(model), lr=0.01, momentum=0.95, nesterov=True, weight_decay=0.0, adamw_lr=3e-3,
                     adamw_betas=[0.9, 0.95], adamw_weight_decay=0.0, adjust_lr_fn=None, ns_dtype="fp32",
                     fused=False)
    mup_learning_rates(muon, wide)  # Muon's own shape scaling is µP's already: unchanged
    assert [g["lr"] for g in muon.param_groups] == [0.01, 3e-3, 3e-3]
    with pytest.raises(GptlabError, match="model.mup_base_width=32: not GPT-2's architecture"):
        check_gpt2_architecture(wide, "model", "to export it, train with")  # as the export refuses it
