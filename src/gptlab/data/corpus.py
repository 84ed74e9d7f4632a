"""WikiText-2 as token ids: each split's text found (or downloaded) and verified, tokenized once with a tiktoken
encoding into a cached memmap, with its statistics (words and bytes, for word-level perplexity and bits per byte).
No torch: eval.py scores windows of these ids, train.py's data module (datamodule.py) cuts them into batches.

    corpus = WikiText2(data_dir="data", splits=["valid"])    # the keys of gptlab/config/data.py
    corpus.ids("valid"), corpus.stats["valid"].words_eol, corpus.encoding.decode(corpus.ids("valid")[:20])
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptlab.config.data import DataConfig
from gptlab.config.rundir import repo_root
from gptlab.data.token_cache import SplitStats, load_or_build
from gptlab.data.tokenizer import Tokenizer
from gptlab.data.wikitext import SHA256, find_files, official_urls
from gptlab.errors import GptlabError


@dataclass(eq=False)
class WikiText2(DataConfig):
    """WikiText-2 (tokens or raw variant) tokenized with a tiktoken encoding. Its arguments are the keys of the data
    group, each declared with its type, default and help in gptlab/config/data.py (DataConfig), and checked when
    it is made. The environment is read by the config (conf/paths: GPTLAB_DATA_DIR, GPTLAB_CACHE_DIR), not here.
    """

    def __post_init__(self):
        super().__post_init__()
        self.data_dir = Path(self.data_dir or repo_root() / "data").expanduser()
        self.cache_dir = Path(self.cache_dir or repo_root() / ".cache" / "gptlab").expanduser()
        if self.cache_dir.resolve() == self.data_dir.resolve():
            raise GptlabError(f"data.cache_dir={self.cache_dir}: expected a directory other than data.data_dir")
        self.splits = tuple(self.splits)
        self.eval_batch_size = self.eval_batch_size or self.batch_size
        self.urls = list(official_urls(self.corpus, self.variant) if self.urls is None else self.urls)
        self.sha256 = {**SHA256[self.corpus], **(self.sha256 or {})}
        self.stats: dict[str, SplitStats] = {}
        self._ids: dict[str, np.ndarray] = {}

    @functools.cached_property
    def encoding(self) -> Tokenizer:
        """The tokenizer (`tokenizer` is its name, the config key)."""
        return Tokenizer(self.tokenizer, self.data_dir)

    @property
    def vocab_size(self) -> int:
        return self.encoding.vocab_size

    def ids(self, split: str) -> np.ndarray:
        """The token ids of `split` (memory-mapped, read-only), loaded or built on first use."""
        if split not in self.splits:
            raise GptlabError(f"split {split!r} is not among this data module's splits {self.splits}")
        self.load([split])
        return self._ids[split]

    def files(self, splits: Iterable[str]) -> dict[str, tuple[Path, str]]:
        """(path, sha256) of each split's verified text file, downloaded when missing (and download is on)."""
        dirs = [self.data_dir, self.cache_dir]  # downloads go to data_dir, or to cache_dir if it is read-only
        return find_files(self.corpus, self.variant, splits, dirs, self.urls, self.sha256, self.download)

    def load(self, splits: Iterable[str]) -> None:
        """The ids and statistics of `splits`, from the token cache (built on first use)."""
        splits = [s for s in splits if s not in self._ids]
        if not splits:
            return
        for split, (path, sha) in self.files(splits).items():
            self._ids[split], self.stats[split] = load_or_build(path, sha, self.cache_dir, self.tokenizer,
                                                                self.corpus, self.variant, split)
            n = len(self._ids[split])
            if self.block_size is not None and n <= self.block_size:
                raise GptlabError(f"{path} holds {n} tokens, too few for one window of data.block_size + 1 = "
                                  f"{self.block_size + 1}: it is empty or cut short")
