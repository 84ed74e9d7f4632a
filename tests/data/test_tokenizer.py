import numpy as np
import pytest

from gptlab.data.tokenizer import Tokenizer
from gptlab.errors import GptlabError


@pytest.fixture(scope="module")
def tok():
    return Tokenizer("gpt2")


def test_gpt2_gives_the_published_ids(tok):
    assert tok.name == "gpt2"
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.eot_id == 50256
    assert tok.vocab_size == 50257


def test_special_token_text_is_encoded_as_plain_text(tok):
    ids = tok.encode("<|endoftext|>")
    assert tok.eot_id not in ids
    assert tok.decode(ids) == "<|endoftext|>"


def test_decode_inverts_encode(tok):
    text = " = Valkyria Chronicles III = \n\n  naïve café, 東京 — 3 @,@ 000\t<unk> \n"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode(np.array(ids, dtype=np.uint16)) == text


def test_encode_batch_and_encode_to_numpy_match_encode(tok):
    texts = ["Hello world", "", " \n\n a  b", "It's 2016 . <|endoftext|>"]
    assert tok.encode_batch(texts, num_threads=2) == [tok.encode(t) for t in texts]
    for t in texts:
        assert tok.encode_to_numpy(t).tolist() == tok.encode(t)


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match="gpt-17") as err:
        Tokenizer("gpt-17")
    assert "gpt2" in str(err.value) and "r50k_base" in str(err.value)


def test_missing_bpe_files_offline_raise_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty: tiktoken must download cl100k_base
    try:
        Tokenizer("cl100k_base")
    except GptlabError as e:
        assert "TIKTOKEN_CACHE_DIR" in str(e) and str(tmp_path) in str(e)
    else:
        pytest.skip("cl100k_base could be loaded: this machine is online (or had it loaded already)")
