"""A thin layer over tiktoken: the BPE tokenizer used by the data pipeline and for generation."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import tiktoken

from gptlab.config.rundir import repo_root
from gptlab.errors import GptlabError


def _use_local_bpe_files(data_dir=None) -> None:
    """Point tiktoken at <data dir>/tiktoken-cache (data_dir, else <repo>/data) when TIKTOKEN_CACHE_DIR, tiktoken's
    own variable, is unset and that folder exists, so an offline machine with the data in place needs no setting."""
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return
    for folder in (data_dir, repo_root() / "data"):
        if folder and (Path(folder) / "tiktoken-cache").is_dir():
            os.environ["TIKTOKEN_CACHE_DIR"] = str(Path(folder) / "tiktoken-cache")
            return


class Tokenizer:
    """A tiktoken encoding by name ("gpt2", "r50k_base", ...).

    `encode` treats special-token text such as "<|endoftext|>" as plain text; `eot_id` is the id of the real
    end-of-text token. tiktoken downloads its BPE files on first use; offline, set TIKTOKEN_CACHE_DIR to a
    directory that already holds them (for this project: shared/data/tiktoken-cache).
    """

    def __init__(self, name: str = "gpt2", data_dir=None):
        valid = tiktoken.list_encoding_names()
        if name not in valid:
            raise GptlabError(f"Unknown tokenizer {name!r}; valid names: {', '.join(valid)}")
        _use_local_bpe_files(data_dir)
        try:
            self._enc = tiktoken.get_encoding(name)
        except OSError as e:  # requests' ConnectionError is an OSError
            cache = os.environ.get("TIKTOKEN_CACHE_DIR", "<unset>")
            raise GptlabError(
                f"Could not load the BPE files of tiktoken encoding {name!r} ({e.__class__.__name__}: {e}). "
                f"tiktoken downloads them from openaipublic.blob.core.windows.net on first use; offline, set "
                f"TIKTOKEN_CACHE_DIR to a directory holding the cached files (now: {cache}), "
                f"e.g. shared/data/tiktoken-cache."
            ) from e
        self.name = name
        self.eot_id: int = self._enc.eot_token
        self.vocab_size: int = self._enc.n_vocab

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str], num_threads: int = 8) -> list[list[int]]:
        """Encode several texts in parallel threads (tiktoken releases the GIL while encoding)."""
        return self._enc.encode_ordinary_batch(list(texts), num_threads=num_threads)

    def encode_to_numpy(self, text: str) -> np.ndarray:
        """`encode` into a uint32 array, skipping the Python list (faster for long texts)."""
        return self._enc.encode_to_numpy(text, disallowed_special=())

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode([int(i) for i in ids])

    def __repr__(self) -> str:
        return f"Tokenizer({self.name!r}, vocab_size={self.vocab_size})"


GPT2_BPE = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"


def gpt2_tokenizer_files(data_dir=None) -> dict[str, bytes]:
    """GPT-2's BPE files as Hugging Face's GPT2Tokenizer reads them: vocab.json (OpenAI's encoder.json) and
    merges.txt (OpenAI's vocab.bpe), the files tiktoken's gpt2 encoding is built from (read from its cache)."""
    from tiktoken.load import read_file_cached

    _use_local_bpe_files(data_dir)
    return {"vocab.json": read_file_cached(GPT2_BPE + "encoder.json"),
            "merges.txt": read_file_cached(GPT2_BPE + "vocab.bpe")}
