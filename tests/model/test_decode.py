"""The one decoder (gptlab/model/decode.py): a KV cache that changes nothing, sampling filters, a stop token, and text
streamed without half a character, on a model trained by the tiny run."""

import io

import pytest
import torch

from gptlab.data.tokenizer import Tokenizer
from gptlab.model.checkpoint import load_model
from gptlab.model.decode import TextStream, generate_tokens, sample_next, top_p_filter

PROMPT = "The history of"


@pytest.fixture(scope="module")
def model(tiny_run):
    return load_model(tiny_run / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer("gpt2")


def greedy_without_cache(model, ids, n):
    """nanoGPT's decoding: the whole context (its last block_size tokens) through the model at every step."""
    idx = torch.tensor([ids])
    for _ in range(n):
        logits = model.logits(model.hidden_states(idx[:, -model.config.block_size :])[:, -1])
        idx = torch.cat([idx, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return idx[0, len(ids) :].tolist()


@pytest.mark.parametrize("prompt_tokens", [3, 100])  # 100 + 50 crosses the 128-token context
def test_greedy_decoding_with_kv_cache_matches_decoding_without_it(model, prompt_tokens):
    ids = torch.randint(0, 50000, (prompt_tokens,), generator=torch.Generator().manual_seed(prompt_tokens)).tolist()
    expected = greedy_without_cache(model, ids, 50)
    assert list(generate_tokens(model, ids, 50, temperature=0)) == expected


def test_a_prompt_longer_than_the_context_is_cropped_with_a_warning(model):
    ids = torch.randint(0, 50000, (200,), generator=torch.Generator().manual_seed(0)).tolist()
    with pytest.warns(UserWarning, match="only its last 128 tokens are used"):
        tokens = list(generate_tokens(model, ids, 3, temperature=0))
    assert tokens == greedy_without_cache(model, ids[-128:], 3)


def test_top_k_1_sampling_equals_greedy(model):
    ids = [464, 2106, 286]
    greedy = list(generate_tokens(model, ids, 20, temperature=0))
    g = torch.Generator().manual_seed(0)
    assert list(generate_tokens(model, ids, 20, temperature=1.5, top_k=1, generator=g)) == greedy
    logits = torch.randn(8, 1000, generator=g)
    assert torch.equal(sample_next(logits, temperature=1.0, top_k=1, generator=g), logits.argmax(-1, keepdim=True))


@pytest.mark.parametrize("top_p, kept", [(0.3, {1}), (0.45, {1}), (0.75, {1, 3}), (0.85, {1, 3, 2}),
                                         (0.97, {0, 1, 2, 3}), (1.0, {0, 1, 2, 3, 4})])
def test_top_p_keeps_the_fewest_most_likely_tokens_that_reach_p(top_p, kept):
    probs = torch.tensor([[0.04, 0.5, 0.15, 0.3, 0.01]])
    filtered = top_p_filter(probs.log(), top_p)
    assert set(torch.isfinite(filtered[0]).nonzero().flatten().tolist()) == kept
    draws = sample_next(probs.log().expand(4000, -1), top_p=top_p, generator=torch.Generator().manual_seed(0))
    assert set(draws.flatten().tolist()) == kept


def test_sampling_is_reproducible_from_the_seed(model):
    def sample(seed):
        g = torch.Generator().manual_seed(seed)
        return list(generate_tokens(model, [464], 10, temperature=1.0, top_p=0.9, generator=g))

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_generation_stops_before_the_end_of_text_token(model):
    first = next(generate_tokens(model, [464], 1, temperature=0))
    assert list(generate_tokens(model, [464], 10, temperature=0, eot_id=first)) == []


def test_text_stream_never_shows_half_a_character_and_cuts_at_the_stop_string(tokenizer):
    text = "snow ☃ and 日本\nnext line"
    out = io.StringIO()
    stream, shown = TextStream(tokenizer, out, stop="\nnext"), []
    for token in tokenizer.encode(text):
        stopped = stream.add(token)
        shown.append(out.getvalue())
        if stopped:
            break
    assert stopped and stream.finish() == out.getvalue() == "snow ☃ and 日本"
    assert not any("\ufffd" in s for s in shown)
    assert "\n" not in out.getvalue()  # the start of the stop string was held back, then dropped
