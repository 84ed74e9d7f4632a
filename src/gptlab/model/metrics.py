"""Language-model metrics from a summed negative log-likelihood, shared by validation, test and eval.py."""

import math


def lm_metrics(nll_sum: float, count: int, stats=None) -> dict:
    """Token loss and perplexity; with the split's statistics also word-level perplexity and bits per byte.

    Word-level perplexity is exp(total NLL / words), words counted as the WikiText papers do (whitespace words plus
    one end-of-line per line), so it compares across tokenizers. Bits per byte is total NLL in bits / UTF-8 bytes.
    Both are exact when the whole split was scored; on part of it, the mean token NLL is scaled to the whole split.
    """
    loss = nll_sum / max(count, 1)
    out = {"loss": loss, "ppl": math.exp(min(loss, 700.0))}
    if stats is not None:
        total_nll = loss * max(_get(stats, "tokens") - 1, 1)  # every token but the first is a target
        out["word_ppl"] = math.exp(min(total_nll / _get(stats, "words_eol"), 700.0))
        out["bpb"] = total_nll / (_get(stats, "bytes") * math.log(2))
    return out


def _get(stats, key):
    return stats[key] if isinstance(stats, dict) else getattr(stats, key)
