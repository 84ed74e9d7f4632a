"""WikiText-2 as a LightningDataModule: BPE ids of each split, cut into training windows and scoring windows.

    dm = WikiText2DataModule(block_size=256, batch_size=16)
    dm.prepare_data()   # find (or download) and verify the text, tokenize each split once into a cache
    dm.setup("fit")     # memory-map the cached ids, build the datasets
    x, y = next(iter(dm.train_dataloader()))   # int64 (batch, block_size) each; y is x shifted by one

Also: `dm.tokenizer` (a `Tokenizer`, loaded on first use), `dm.vocab_size`, `dm.ids(split)` (the ids of "train",
"valid" or "test": a read-only memory-mapped uint16 array, uint32 for vocabularies over 65536), `dm.stats[split]`
(a `SplitStats` with attributes tokens, words, words_eol, bytes, lines; filled by prepare_data/setup/ids), and after
setup `dm.train_dataset` (`TrainWindows`), `dm.val_dataset` and `dm.test_dataset` (`EvalWindows`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import tiktoken
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from gptlab.data.sampler import ResumableSampler, resume_position
from gptlab.data.token_cache import SplitStats, load_or_build
from gptlab.data.tokenizer import Tokenizer, repo_root
from gptlab.data.wikitext import SHA256, SPLITS, URLS, VARIANTS, find_files
from gptlab.errors import GptlabError
from gptlab.model.loss import IGNORE_INDEX  # padding and context-only positions of eval windows


class TrainWindows(Dataset):
    """Training samples: windows of block_size + 1 consecutive ids, returned as (x, y) = (w[:-1], w[1:]).

    sampling="random": every start offset is a sample (the DataLoader shuffles them, so each epoch draws random
    offsets). sampling="sequential": non-overlapping windows at offsets 0, B, 2B, ...
    """

    def __init__(self, ids: np.ndarray, block_size: int, sampling: str = "random"):
        if sampling not in ("random", "sequential"):
            raise GptlabError(f"sampling must be 'random' or 'sequential', got {sampling!r}")
        if len(ids) < block_size + 1:
            raise GptlabError(f"{len(ids)} tokens are too few for one window of block_size + 1 = {block_size + 1}")
        self.ids, self.block_size = ids, block_size
        self.step = 1 if sampling == "random" else block_size
        self.num_windows = (len(ids) - block_size - 1) // self.step + 1

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.num_windows:
            raise IndexError(i)
        start = i * self.step
        w = torch.from_numpy(self.ids[start : start + self.block_size + 1].astype(np.int64))
        return w[:-1], w[1:]


class EvalWindows(Dataset):
    """Scoring windows that predict every token of `ids` after the first exactly once.

    Window k reads ids from k * stride on. The first window scores all its targets; each later one scores only
    its last `stride` targets, the first block_size - stride positions being context whose targets are
    IGNORE_INDEX. The last window is padded: x with 0, y with IGNORE_INDEX; or, with align_end, it ends where the
    ids end and reads a full block (its earlier targets masked), as lm-eval's rolling windows do. stride =
    block_size (the default) gives non-overlapping windows; a smaller stride gives each prediction more context at
    more cost. Summing the loss over targets != IGNORE_INDEX covers `num_targets` = len(ids) - 1 tokens.
    """

    def __init__(self, ids: np.ndarray, block_size: int, stride: int | None = None, align_end: bool = False):
        stride = block_size if stride is None else stride
        if not 0 < stride <= block_size:
            raise GptlabError(f"stride must be in 1..block_size={block_size}, got {stride}")
        self.ids, self.block_size, self.stride, self.align_end = ids, block_size, stride, align_end
        self.num_targets = max(len(ids) - 1, 0)
        extra = max(self.num_targets - block_size, 0)  # targets left after the first window
        self.num_windows = (1 + -(-extra // stride)) if self.num_targets else 0

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= k < self.num_windows:
            raise IndexError(k)
        start, n, B = k * self.stride, len(self.ids), self.block_size
        done = (k - 1) * self.stride + B  # targets the earlier windows scored
        if self.align_end and k > 0 and k == self.num_windows - 1:
            start = n - 1 - B
            w = torch.from_numpy(self.ids[start:n].astype(np.int64))
            x, y = w[:-1].clone(), w[1:].clone()
            y[: done - start] = IGNORE_INDEX
            return x, y
        w = torch.from_numpy(self.ids[start : min(start + B + 1, n)].astype(np.int64))
        x = torch.zeros(B, dtype=torch.int64)
        y = torch.full((B,), IGNORE_INDEX, dtype=torch.int64)
        x[: len(w) - 1], y[: len(w) - 1] = w[:-1], w[1:]
        if k > 0:
            y[: B - self.stride] = IGNORE_INDEX  # already scored by the previous window
        return x, y


class PaddedWindows(Dataset):
    """Eval windows followed by blank windows (x = 0, every target IGNORE_INDEX) up to a multiple of `ranks`.

    With DistributedSampler each rank then gets the same number of windows, each real window exactly once
    (DistributedSampler alone would repeat windows to even the ranks out, counting them twice), and the blanks
    score nothing. Equal counts keep the ranks in step: FSDP needs every rank in every forward.
    """

    def __init__(self, windows: EvalWindows, ranks: int):
        self.windows, self.num_windows = windows, -(-len(windows) // ranks) * ranks

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self.windows) <= k < self.num_windows:
            B = self.windows.block_size
            return torch.zeros(B, dtype=torch.int64), torch.full((B,), IGNORE_INDEX, dtype=torch.int64)
        return self.windows[k]


class WikiText2DataModule(L.LightningDataModule):
    """WikiText-2 (tokens or raw variant) tokenized with a tiktoken encoding.

    data_dir: directory containing wikitext-2/ (and/or wikitext-2-raw/, tiktoken-cache/); None: <repo>/data.
        May be read-only: downloads then go to cache_dir, which is searched too. (The environment is read by the
        config, conf/paths: GPTLAB_DATA_DIR and GPTLAB_CACHE_DIR.)
    cache_dir: token caches; None: <repo>/.cache/gptlab.
    eval_batch_size: None means batch_size. eval_stride: see `EvalWindows`; None means block_size.
    download: fetch the official archive when a split is missing. urls: archive URLs tried in order (None: the
    official ones, `wikitext.URLS`). sha256: {file name: sha256 or None}, overriding `wikitext.SHA256`.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        variant: str = "tokens",
        tokenizer: str = "gpt2",
        block_size: int = 256,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        sampling: str = "random",
        eval_stride: int | None = None,
        num_workers: int = 0,
        seed: int = 1337,
        download: bool = True,
        splits: Iterable[str] = SPLITS,
        urls: Sequence[str] | None = None,
        sha256: Mapping[str, str | None] | None = None,
    ):
        super().__init__()
        _check(variant in VARIANTS, f"variant must be one of {list(VARIANTS)}, got {variant!r}")
        names = tiktoken.list_encoding_names()
        _check(tokenizer in names, f"unknown tokenizer {tokenizer!r}; valid names: {', '.join(names)}")
        _check(block_size > 0, f"block_size must be > 0, got {block_size}")
        _check(batch_size > 0, f"batch_size must be > 0, got {batch_size}")
        _check(eval_batch_size is None or eval_batch_size > 0, f"eval_batch_size must be > 0, got {eval_batch_size}")
        _check(sampling in ("random", "sequential"), f"sampling must be 'random' or 'sequential', got {sampling!r}")
        stride_ok = eval_stride is None or 0 < eval_stride <= block_size
        _check(stride_ok, f"eval_stride must be in 1..block_size={block_size}, got {eval_stride}")
        _check(num_workers >= 0, f"num_workers must be >= 0, got {num_workers}")
        splits = tuple(splits)
        bad = [s for s in splits if s not in SPLITS]
        _check(splits and not bad, f"splits must be a non-empty subset of {SPLITS}, got {splits}")
        self.data_dir = Path(data_dir or repo_root() / "data").expanduser()
        self.cache_dir = Path(cache_dir or repo_root() / ".cache" / "gptlab")
        self.cache_dir = self.cache_dir.expanduser()
        _check(self.cache_dir.resolve() != self.data_dir.resolve(), "cache_dir must differ from data_dir")
        self.variant, self.tokenizer_name, self.splits = variant, tokenizer, splits
        self.block_size, self.batch_size, self.eval_batch_size = block_size, batch_size, eval_batch_size or batch_size
        self.sampling, self.eval_stride, self.num_workers, self.seed = sampling, eval_stride, num_workers, seed
        self.download = download
        self.urls = list(URLS[variant] if urls is None else urls)
        self.sha256 = {**SHA256, **(sha256 or {})}
        self.stats: dict[str, SplitStats] = {}
        self._ids: dict[str, np.ndarray] = {}
        self.train_dataset: TrainWindows | None = None
        self.val_dataset: EvalWindows | None = None
        self.test_dataset: EvalWindows | None = None
        self._resume_at: dict | None = None  # from a checkpoint's state_dict: see train_dataloader

    @functools.cached_property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self.tokenizer_name, self.data_dir)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def prepare_data(self) -> None:
        """Make sure every split's text is present and verified, and its token cache is built."""
        self._load(self.splits)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",), "predict": ("test",)}
        splits = [s for s in wanted.get(stage, SPLITS) if s in self.splits]
        self._load(splits)
        if "train" in splits:
            self.train_dataset = TrainWindows(self._ids["train"], self.block_size, self.sampling)
        if "valid" in splits:
            self.val_dataset = EvalWindows(self._ids["valid"], self.block_size, self.eval_stride)
        if "test" in splits:
            self.test_dataset = EvalWindows(self._ids["test"], self.block_size, self.eval_stride)

    def ids(self, split: str) -> np.ndarray:
        """The token ids of `split` (memory-mapped, read-only), loaded or built on first use."""
        _check(split in self.splits, f"split {split!r} is not among this datamodule's splits {self.splits}")
        self._load([split])
        return self._ids[split]

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return self._loader(self._need(self.train_dataset, "train"), self.batch_size, True, generator)

    def state_dict(self) -> dict:
        """Saved in checkpoints: where training stands in the data order, so that a resumed run goes on with the
        next unseen batch (see sampler.py)."""
        return resume_position(self.trainer)

    def load_state_dict(self, state: dict) -> None:
        self._resume_at = state or None

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._need(self.val_dataset, "valid"), self.eval_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._need(self.test_dataset, "test"), self.eval_batch_size, False)

    # ---

    def _load(self, splits: Iterable[str]) -> None:
        splits = [s for s in splits if s not in self._ids]
        if not splits:
            return
        dirs = [self.data_dir, self.cache_dir]  # downloads go to data_dir, or to cache_dir if it is read-only
        files = find_files(self.variant, splits, dirs, self.urls, self.sha256, self.download)
        for split, (path, sha) in files.items():
            args = (path, sha, self.cache_dir, self.tokenizer_name, self.variant, split)
            self._ids[split], self.stats[split] = load_or_build(*args)
            n = len(self._ids[split])
            _check(n > self.block_size, f"{path} holds {n} tokens, too few for one window of data.block_size + 1 = "
                                        f"{self.block_size + 1}: it is empty or cut short")

    def _loader(self, dataset: Dataset, batch_size: int, train: bool, generator=None) -> DataLoader:
        sampler = self._train_sampler(dataset) if train else None
        if not train and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # one shard per rank (Lightning keeps a DistributedSampler it is given): eval windows each scored
            # once, on one rank
            dataset = PaddedWindows(dataset, dist.get_world_size())
            sampler = DistributedSampler(dataset, shuffle=False, seed=self.seed, drop_last=False)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            drop_last=train,
            generator=generator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def _train_sampler(self, dataset: Dataset) -> ResumableSampler:
        """Training windows shuffled by (seed, epoch), disjoint across ranks, starting where a resumed checkpoint
        stopped."""
        ddp = dist.is_available() and dist.is_initialized()
        train_sampler = ResumableSampler(dataset, seed=self.seed, num_replicas=dist.get_world_size() if ddp else 1,
                                         rank=dist.get_rank() if ddp else 0)
        if self._resume_at:
            train_sampler.resume_at(self._resume_at["epoch"], self._resume_at["batches"] * self.batch_size)
            self._resume_at = None
        return train_sampler

    def _need(self, dataset: Dataset | None, split: str) -> Dataset:
        if dataset is None:
            raise RuntimeError(f"No {split} dataset: call setup() first, and include {split!r} in splits")
        return dataset


def _check(ok, message: str) -> None:
    if not ok:
        raise GptlabError(message)
