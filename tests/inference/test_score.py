"""A model scored on text (gptlab/inference/score.py): perplexity, word-level perplexity and bits per byte by hand,
equal to the training module's validation, and a sliding window that scores every token once."""

import math

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DATA_DIR

from gptlab.data.datamodule import WikiText2DataModule
from gptlab.data.token_cache import text_stats
from gptlab.data.tokenizer import Tokenizer
from gptlab.inference import split_metrics
from gptlab.model import GPT, GPTConfig
from gptlab.model.checkpoint import load_model
from gptlab.training.module import GPTLitModule


@pytest.mark.parametrize("head", ["full", "adaptive"])
def test_word_ppl_and_bits_per_byte_match_a_hand_computation(head):
    text = "The café is open .\nIt serves tea .\n"  # 9 words + 2 end-of-lines; 36 UTF-8 bytes (é is 2)
    ids = np.array(Tokenizer("gpt2").encode(text), dtype=np.uint16)
    stats = text_stats(text.encode(), tokens=len(ids))
    assert (stats.words_eol, stats.bytes) == (11, 36)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=4, n_layer=1, n_head=1, n_embd=16, head=head, adaptive_cutoffs=(100, 1000)))
    model.eval()

    m = split_metrics(model, ids, stats, batch_size=2)

    t = torch.from_numpy(ids.astype(np.int64))
    total = 0.0  # non-overlapping windows of 4 targets, each read with its own 4 tokens of context
    for s in range(0, len(t) - 1, 4):
        x, y = t[s : s + 4], t[s + 1 : s + 5]
        logp = F.log_softmax(model.logits(model.hidden_states(x[None, : len(y)]))[0].double(), dim=-1)
        total -= logp.gather(1, y[:, None]).sum().item()
    assert m["tokens"] == len(ids) - 1 == 10
    assert m["ppl"] == pytest.approx(math.exp(total / 10), rel=1e-5)
    assert m["word_ppl"] == pytest.approx(math.exp(total / 11), rel=1e-5)
    assert m["bpb"] == pytest.approx(total / (36 * math.log(2)), rel=1e-5)


def test_non_overlapping_eval_equals_the_training_modules_validation(tiny_run, token_cache_dir):
    model = load_model(tiny_run / "checkpoints" / "last.ckpt")
    module = GPTLitModule(model=model.config)
    module.model = model
    dm = WikiText2DataModule(data_dir=DATA_DIR, cache_dir=token_cache_dir, block_size=module.model.config.block_size,
                             eval_batch_size=4, splits=("valid",))
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", limit_val_batches=3, logger=False,
                        enable_progress_bar=False, enable_model_summary=False)
    validated = trainer.validate(module, datamodule=dm, verbose=False)[0]

    m = split_metrics(module.model, dm.ids("valid"), dm.stats["valid"], batch_size=5, limit_windows=12)
    assert m["tokens"] == validated["val/tokens"] == 12 * 128
    assert m["ppl"] == pytest.approx(validated["val/ppl"], rel=1e-5)
    assert m["word_ppl"] == pytest.approx(validated["val/word_ppl"], rel=1e-5)
    assert m["bpb"] == pytest.approx(validated["val/bpb"], rel=1e-5)
    # top-1 accuracy against the full distribution's argmax over the same 12 windows
    ids = torch.from_numpy(dm.ids("valid")[: 12 * 128 + 1].astype(np.int64))
    x, y = ids[:-1].view(12, 128), ids[1:].view(12, 128)
    with torch.no_grad():
        preds = module.model.logits(module.model.hidden_states(x)).argmax(-1)
    assert validated["val/acc"] == pytest.approx((preds == y).double().mean().item(), rel=1e-6)  # logged as fp32


def test_smaller_stride_scores_every_token_once_with_lower_perplexity():
    """A model that needs context (each token repeats the one two back, in random segments of 6) is scored with
    less context at the start of each non-overlapping window than with a sliding one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains many times faster on one thread
    try:
        whole, sliding = stride_8_and_2_of_a_model_that_needs_context()
    finally:
        torch.set_num_threads(threads)
    assert whole["tokens"] == sliding["tokens"] == 600
    assert sliding["ppl"] < whole["ppl"]


def stride_8_and_2_of_a_model_that_needs_context():
    g = torch.Generator().manual_seed(0)
    segments = torch.randint(0, 16, (600, 2), generator=g).repeat(1, 3)  # a b a b a b
    ids = segments.flatten()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=32))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        starts = torch.randint(0, len(ids) - 9, (32,), generator=g)
        w = torch.stack([ids[s : s + 9] for s in starts])
        _, loss = model(w[:, :-1], w[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test_ids = ids[:601].numpy()

    return split_metrics(model, test_ids, stride=8), split_metrics(model, test_ids, stride=2)
