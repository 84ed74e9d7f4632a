"""The one decoder: text from a GPT, one token at a time, streamed as it comes.

Decoding is incremental: each step feeds only the new token and reuses the keys and values of the earlier ones
(`KVCache`). Sampling: temperature (0: greedy), then top-k, then top-p (nucleus) filtering. Generation stops
at the end-of-text token, at an optional stop string, or after max_new_tokens.

    from gptlab.model.decode import complete
    text = complete(model, tokenizer, "The history of", max_new_tokens=50, temperature=0)
"""

import warnings

import torch

from gptlab.errors import GptlabError
from gptlab.model.gpt import KVCache


def top_p_filter(logits, top_p):
    """Logits (B, V) with -inf outside the nucleus: the fewest most likely tokens whose probability adds up to at
    least top_p (the most likely token always stays)."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # probability of the tokens ranked above each one
    drop_sorted = before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Next token ids (B, 1) from logits (B, V): the argmax at temperature 0, else a sample from
    softmax(logits / temperature) restricted to the top_k tokens, then to the top_p nucleus."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(int(top_k), logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    return torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1, generator=generator)


@torch.no_grad()
def generate_tokens(model, ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, eot_id=None,
                    generator=None):
    """Yield up to max_new_tokens new token ids continuing `ids` (a list of ints), one at a time; stops before
    `eot_id`. Each step runs only the new token through the model, with the KV cache of the earlier ones. When
    the context is full, the cache restarts from the last block_size tokens: the same tokens as decoding each
    step from scratch on the last block_size tokens, as nanoGPT does."""
    block_size = model.config.block_size
    ids = [int(i) for i in ids]
    if not ids:
        raise GptlabError("the prompt is empty: give some text to continue")
    if len(ids) > block_size:
        warnings.warn(f"the prompt has {len(ids)} tokens, more than the model's context of {block_size}: "
                      f"only its last {block_size} tokens are used", stacklevel=2)
    device = next(model.parameters()).device
    caches, new = None, ids[-block_size:]
    for _ in range(max_new_tokens):
        if caches is None or len(caches[0]) + len(new) > block_size:
            caches, new = [KVCache() for _ in model.transformer.h], ids[-block_size:]
        h = model.hidden_states(torch.tensor([new], device=device), caches)
        token = int(sample_next(model.logits(h[:, -1]).float(), temperature, top_k, top_p, generator))
        if token == eot_id:
            return
        ids.append(token)
        new = [token]
        yield token


class TextStream:
    """The text of a growing list of token ids, written to `out` as it grows. A character split across tokens is
    held back until it is whole; with `stop`, the text ends just before the first `stop`."""

    def __init__(self, tokenizer, out=None, stop=None):
        self.tokenizer, self.out, self.stop = tokenizer, out, stop or None
        self.ids, self.text, self.shown = [], "", 0

    def add(self, token) -> bool:
        """Add one token; True when the stop string has been reached."""
        self.ids.append(token)
        self.text = self.tokenizer.decode(self.ids)
        if self.stop and (cut := self.text.find(self.stop)) != -1:
            self.text = self.text[:cut]
            self._write(self.text)
            return True
        hold = 1 if self.text.endswith("\ufffd") else 0  # an incomplete UTF-8 character
        if self.stop:  # the text may end with the start of the stop string
            hold = max(hold, next((k for k in range(len(self.stop) - 1, 0, -1) if self.text.endswith(self.stop[:k])),
                                  0))
        self._write(self.text[: len(self.text) - hold])
        return False

    def finish(self) -> str:
        self._write(self.text)
        return self.text

    def _write(self, text):
        if self.out is not None and len(text) > self.shown:
            self.out.write(text[self.shown :])
            self.out.flush()
        self.shown = max(self.shown, len(text))


def complete(model, tokenizer, prompt, max_new_tokens, stop=None, out=None, **sampling) -> str:
    """The continuation of `prompt` (text), streamed to `out` when given. sampling: temperature, top_k, top_p,
    generator (see sample_next)."""
    stream = TextStream(tokenizer, out, stop)
    tokens = generate_tokens(model, tokenizer.encode(prompt), max_new_tokens, eot_id=tokenizer.eot_id, **sampling)
    for token in tokens:
        if stream.add(token):
            break
    return stream.finish()
