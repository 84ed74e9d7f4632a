"""The order of training samples, derived from (seed, epoch) alone, so a resumed run can start mid-epoch exactly
where the interrupted one stopped.

The data module saves `resume_position(trainer)` in each checkpoint (its state_dict) and, when resuming, calls
`sampler.resume_at(epoch, samples)`: the first iteration then skips the samples this process already trained on.
"""


import torch
from torch.utils.data import DistributedSampler


class Shuffle:
    """A seeded pseudo-random permutation of range(n), computed for any positions at once, with no array of n: a
    4-round Feistel network over the smallest domain of 4^h >= n numbers, each result >= n sent through it again
    (cycle-walking: fewer than 4 passes expected) until it lands in range. So the shuffled order of a corpus of any
    size costs nothing to set up and no memory per rank, where a torch.randperm of WikiText-103's 117M windows
    takes seconds and ~1 GB on every rank at every epoch (docs/benchmarks.md)."""

    ROUNDS = 4

    def __init__(self, n: int, seed: int):
        self.n, self.half = n, max(1, ((max(n, 2) - 1).bit_length() + 1) // 2)
        self.mask = (1 << self.half) - 1
        self.keys = torch.randint(0, 1 << 62, (self.ROUNDS,), generator=torch.Generator().manual_seed(seed)).tolist()

    def __call__(self, positions: torch.Tensor) -> torch.Tensor:
        x = self._rounds(positions.to(torch.int64))
        while (out := x >= self.n).any():
            x[out] = self._rounds(x[out])
        return x

    def _rounds(self, x: torch.Tensor) -> torch.Tensor:
        left, right = x >> self.half, x & self.mask
        for key in self.keys:
            left, right = right, left ^ self._mix(right, key)
        return (left << self.half) | right

    def _mix(self, x: torch.Tensor, key: int) -> torch.Tensor:
        """A keyed integer hash, cut to half the bits: splitmix64's multiply and xor-shift steps (its constants as
        signed int64, whose products wrap)."""
        h = (x ^ key) * -7046029254386353131
        h = (h ^ (h >> 29)) * -4658895280553007687
        return (h ^ (h >> 32)) & self.mask


class ResumableSampler(DistributedSampler):
    """A shuffled order of the dataset per epoch (seeded by seed + epoch), shared out among `num_replicas`
    processes (process `rank` takes every num_replicas-th position of it; the tail that does not divide evenly
    is dropped). Positions are shuffled on the fly (`Shuffle`): no permutation of the dataset is held. A
    DistributedSampler, so Lightning keeps it under DDP rather than wrapping it, and calls set_epoch.

    Used outside Lightning, each new iteration moves on to the next epoch (a new order) unless set_epoch says
    otherwise. `len()` is always the whole epoch's share: Lightning counts a resumed epoch's batches from its
    start.
    """

    def __init__(self, dataset, seed: int = 0, shuffle: bool = True, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self._skip = None  # (epoch, samples already consumed in it)

    def resume_at(self, epoch: int, samples: int) -> None:
        """Start at `epoch`, leaving out the first `samples` of this process's share of it."""
        self.epoch = epoch
        self._skip = (epoch, samples)

    def __iter__(self):
        epoch, start = self.epoch, 0
        if self._skip is not None and self._skip[0] == epoch:
            start = self._skip[1]
        self._skip = None
        self.epoch = epoch + 1  # a fresh iter() without set_epoch is the next epoch
        return self._iterate(epoch, start)

    def _iterate(self, epoch: int, start: int):
        shuffle = Shuffle(len(self.dataset), self.seed + epoch) if self.shuffle else None
        for first in range(start, self.num_samples, 1 << 14):  # a piece at a time: lists of ints are slow to make
            positions = torch.arange(first, min(first + (1 << 14), self.num_samples)) * self.num_replicas + self.rank
            yield from (shuffle(positions) if shuffle else positions).tolist()


def resume_position(trainer) -> dict:
    """Where the next training batch comes from: {"epoch": e, "batches": batches of epoch e already trained on}.
    Read from Lightning's loop counters when a checkpoint is written (at the end of a batch or of validation)."""
    if trainer is None:
        return {}
    epoch = trainer.current_epoch
    batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    if batches >= trainer.num_training_batches:  # the epoch is over: the next batch starts the next one
        epoch, batches = epoch + 1, 0
    return {"epoch": int(epoch), "batches": int(batches)}
