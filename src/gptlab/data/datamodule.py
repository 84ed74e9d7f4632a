"""WikiText-2 as a LightningDataModule: the ids of each split (corpus.py) cut into training windows and scoring
windows (windows.py), as batches.

    dm = WikiText2DataModule(block_size=256, batch_size=16)   # the keys of gptlab/config/data.py
    dm.prepare_data()   # find (or download) and verify the text, tokenize each split once into a cache
    dm.setup("fit")     # memory-map the cached ids, build the datasets
    x, y = next(iter(dm.train_dataloader()))   # int64 (batch, block_size) each; y is x shifted by one

Also what a WikiText2 corpus has (`dm.encoding`, `dm.vocab_size`, `dm.ids(split)`, `dm.stats[split]`), and after
setup `dm.train_dataset` (`TrainWindows`), `dm.val_dataset` and `dm.test_dataset` (`EvalWindows`).
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from gptlab.data.corpus import WikiText2
from gptlab.data.sampler import ResumableSampler, resume_position
from gptlab.data.wikitext import SPLITS
from gptlab.data.windows import EvalWindows, PaddedWindows, TrainWindows


@dataclass(eq=False)
class WikiText2DataModule(WikiText2, L.LightningDataModule):
    """WikiText-2's ids (corpus.py) as Lightning's batches: training windows shuffled by (seed, epoch) and shared out
    across ranks, validation and test windows each scored once; where training stands in the data order is saved
    in checkpoints, so a resumed run goes on with the next unseen batch."""

    def __post_init__(self):
        super().__post_init__()
        L.LightningDataModule.__init__(self)
        self.train_dataset: TrainWindows | None = None
        self.val_dataset: EvalWindows | None = None
        self.test_dataset: EvalWindows | None = None
        self._resume_at: dict | None = None  # from a checkpoint's state_dict: see train_dataloader

    def prepare_data(self) -> None:
        """Make sure every split's text is present and verified, and its token cache is built."""
        self.load(self.splits)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",), "predict": ("test",)}
        splits = [s for s in wanted.get(stage, SPLITS) if s in self.splits]
        self.load(splits)
        if "train" in splits:
            self.train_dataset = TrainWindows(self._ids["train"], self.block_size, self.sampling)
        if "valid" in splits:
            self.val_dataset = EvalWindows(self._ids["valid"], self.block_size, self.eval_stride)
        if "test" in splits:
            self.test_dataset = EvalWindows(self._ids["test"], self.block_size, self.eval_stride)

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


