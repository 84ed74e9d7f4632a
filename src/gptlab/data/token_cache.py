"""Tokenize a text file once and cache the ids as a .npy file (read back memory-mapped), with its statistics.

Each cache is `<name>.npy` plus a sidecar `<name>.json` holding the token count, dtype, sha256 of the id bytes and
the text statistics. The name contains the tokenizer, variant, split and the source file's sha256, so a changed
source or tokenizer never meets a stale cache. A cache that does not match its sidecar is rebuilt with a warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptlab.data.tokenizer import Tokenizer
from gptlab.data.wikitext import title
from gptlab.errors import GptlabError

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


@dataclass(frozen=True)
class SplitStats:
    """Counts for one split: BPE `tokens`; whitespace-separated `words`; `words_eol` = words + one end-of-line per
    line, as the WikiText papers count (use it for word-level perplexity); UTF-8 `bytes` (for bits per byte);
    `lines`."""

    tokens: int
    words: int
    words_eol: int
    bytes: int
    lines: int


def text_stats(data: bytes, tokens: int) -> SplitStats:
    """Statistics of UTF-8 text; words are split on ASCII whitespace, like `bytes.split()`."""
    space = np.zeros(256, dtype=bool)
    space[list(b" \t\n\r\x0b\x0c")] = True
    is_space = space[np.frombuffer(data, dtype=np.uint8)]
    # a word starts at each non-space byte that follows a space byte (or the start of the text)
    words = int(np.count_nonzero(is_space[:-1] & ~is_space[1:])) + int(len(data) > 0 and not is_space[0])
    lines = data.count(b"\n") + int(len(data) > 0 and not data.endswith(b"\n"))
    return SplitStats(tokens=tokens, words=words, words_eol=words + lines, bytes=len(data), lines=lines)


def safe_chunks(text: str, size: int) -> list[str]:
    """Cut `text` into pieces of about `size` characters that encode to the same ids as the whole text.

    Each cut is just before a single space that has non-whitespace on both sides: the GPT-2 split pattern never
    makes a piece that crosses such a point, and the piece after it starts with that space either way. Cutting at
    newlines would not be safe: the pattern joins runs of whitespace across them.
    """
    chunks, start = [], 0
    while len(text) - start > size and (cut := _next_safe_space(text, start + size)) != -1:
        chunks.append(text[start:cut])
        start = cut
    chunks.append(text[start:])
    return chunks


def _next_safe_space(text: str, i: int) -> int:
    while (i := text.find(" ", i)) != -1:
        if i + 1 < len(text) and not text[i - 1].isspace() and not text[i + 1].isspace():
            return i
        i += 1
    return -1


def encode_text(tokenizer: Tokenizer, text: str, dtype: np.dtype, num_threads: int | None = None) -> np.ndarray:
    """Encode like `tokenizer.encode(text)`, but in threads over safe chunks; returns a 1-D array of `dtype`."""
    num_threads = num_threads or _cpu_count()
    chunk_chars = max(1 << 16, len(text) // (4 * num_threads))  # a few per thread: a slow thread does fewer
    with ThreadPoolExecutor(num_threads) as pool:  # tiktoken releases the GIL while it encodes
        pieces = list(pool.map(tokenizer.encode_to_numpy, safe_chunks(text, chunk_chars)))
    return np.concatenate(pieces).astype(dtype, copy=False)


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def id_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def load_or_build(
    source: Path, source_sha256: str, cache_dir: Path, tokenizer_name: str, corpus: str, variant: str, split: str
) -> tuple[np.ndarray, SplitStats]:
    """Return the ids of `source` (memory-mapped, read-only) and its statistics, tokenizing only when needed."""
    name = f"{corpus.replace('-', '')}-{variant}-{split}-{tokenizer_name}-{source_sha256[:16]}"
    npy, meta = cache_dir / f"{name}.npy", cache_dir / f"{name}.json"
    if npy.exists() or meta.exists():
        try:
            return _load(npy, meta)
        except Exception as e:  # any way a cache can be broken: missing half, truncated, flipped bytes, bad JSON
            warnings.warn(f"Token cache {npy} is unusable ({e}); rebuilding it.", stacklevel=2)
    log.info("Tokenizing %s with %s into %s", source, tokenizer_name, npy)
    tokenizer = Tokenizer(tokenizer_name, source.parent.parent)  # BPE files beside wikitext-2/, if there
    data = source.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise GptlabError(f"{source} is not UTF-8 text: byte {e.start} (line {line}) is {data[e.start:e.end]!r}. "
                          f"Give a {title(corpus)} file saved as UTF-8") from None
    ids = encode_text(tokenizer, text, id_dtype(tokenizer.vocab_size))
    stats = text_stats(data, tokens=len(ids))
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(npy, lambda f: np.save(f, ids))
    except OSError as e:  # a cache that is only read is fine; one that must be built needs a writable folder
        raise GptlabError(f"data.cache_dir={cache_dir}: cannot write the token cache there ({e.strerror}); give a "
                          f"writable directory (or GPTLAB_CACHE_DIR)") from None
    sidecar = {
        "format": CACHE_FORMAT,
        "source": str(source),
        "source_sha256": source_sha256,
        "tokenizer": tokenizer_name,
        "tokens": len(ids),
        "dtype": ids.dtype.name,
        "ids_sha256": hashlib.sha256(ids).hexdigest(),
        "stats": dataclasses.asdict(stats),
    }
    _write_atomic(meta, lambda f: f.write(json.dumps(sidecar, indent=2).encode()))
    return _load(npy, meta)


def _load(npy: Path, meta: Path) -> tuple[np.ndarray, SplitStats]:
    info = json.loads(meta.read_text())
    if info.get("format") != CACHE_FORMAT:
        raise ValueError(f"cache format {info.get('format')}, expected {CACHE_FORMAT}")
    ids = np.load(npy, mmap_mode="r")
    if ids.shape != (info["tokens"],) or ids.dtype.name != info["dtype"]:
        raise ValueError(f"holds {ids.shape} {ids.dtype}, sidecar says ({info['tokens']},) {info['dtype']}")
    if hashlib.sha256(ids).hexdigest() != info["ids_sha256"]:
        raise ValueError("sha256 of the ids does not match the sidecar")
    return ids, SplitStats(**info["stats"])


def _write_atomic(path: Path, write) -> None:
    """Write through a temp file in the same directory and rename it into place: never a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; this is a shared file
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
