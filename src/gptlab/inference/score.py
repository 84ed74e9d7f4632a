"""A model scored on text: the summed negative log-likelihood over scoring windows (data.EvalWindows), and the
language-model metrics from it (token perplexity, word-level perplexity, bits per byte: model.metrics). eval.py
and lm-eval's wikitext task use it; validation during training computes the same sums in the LightningModule.

Two ways to cut a split: `split_metrics` scores the whole split in windows of block_size (a smaller stride gives
each token more context), `document_metrics` each article alone, as lm-eval's document-level wikitext task does.
"""

import contextlib
import math
import re
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from gptlab.data import EvalWindows
from gptlab.errors import GptlabError
from gptlab.model.metrics import lm_metrics


@torch.inference_mode()
def score_windows(model, ids, stride=None, batch_size=32, limit_windows=None, device="cpu",
                  autocast=contextlib.nullcontext, align_end=False):
    """Summed NLL (nats), number of scored tokens and windows over the scoring windows of `ids`; only the first
    `limit_windows` windows when given. Also returns the number of windows of the whole split."""
    windows = EvalWindows(ids, model.config.block_size, stride, align_end)
    n = len(windows) if limit_windows is None else min(int(limit_windows), len(windows))
    device = torch.device(device)
    loader = DataLoader(Subset(windows, range(n)), batch_size=batch_size, pin_memory=device.type == "cuda")
    nll = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.long, device=device)
    for x, y in loader:
        with autocast():
            batch_nll, batch_count, _ = model.score(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        nll += batch_nll
        count += batch_count
    return nll.item(), int(count.item()), n, len(windows)


def split_metrics(model, ids, stats=None, **kwargs) -> dict:
    """lm_metrics of one split (loss, ppl, and with the split's statistics word_ppl and bpb), plus the tokens and
    windows scored and the speed. kwargs go to score_windows."""
    t0 = time.perf_counter()
    nll, count, windows, all_windows = score_windows(model, ids, **kwargs)
    seconds = time.perf_counter() - t0
    if count == 0:
        raise GptlabError("no token was scored: the split is empty or limit_windows is 0")
    return {**lm_metrics(nll, count, stats), "nll_sum": nll, "tokens": count, "windows": windows,
            "full_split": windows == all_windows, "seconds": seconds, "tokens_per_sec": count / seconds}


def document_metrics(model, tokenizer, pages, detokenize=None, **kwargs) -> dict:
    """lm-eval's document-level scoring (its wikitext task): each page on its own, after an end-of-text token, in
    non-overlapping windows of block_size, the last one reading a full block back from the page's end; word
    perplexity over
    the page's original whitespace-separated words and bits per byte over its original UTF-8 bytes. `detokenize`
    (lm-eval's wikitext detokeniser) turns the page into the text that is scored. kwargs go to score_windows."""
    nll, tokens, words, nbytes = 0.0, 0, 0, 0
    t0 = time.perf_counter()
    for page in pages:
        ids = np.array([tokenizer.eot_id, *tokenizer.encode(detokenize(page) if detokenize else page)])
        page_nll, count, _, _ = score_windows(model, ids, align_end=True, **kwargs)
        nll, tokens = nll + page_nll, tokens + count
        words, nbytes = words + len(re.split(r"\s+", page)), nbytes + len(page.encode("utf-8"))
    seconds = time.perf_counter() - t0
    return {"documents": len(pages), "tokens": tokens, "nll_sum": nll, "loss": nll / max(tokens, 1),
            "ppl": math.exp(min(nll / max(tokens, 1), 700)), "word_ppl": math.exp(min(nll / words, 700)),
            "bpb": nll / nbytes / math.log(2), "windows": None, "full_split": True, "seconds": seconds,
            "tokens_per_sec": tokens / seconds}
