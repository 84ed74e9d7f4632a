"""The order of training samples, derived from (seed, epoch) alone, so a resumed run can start mid-epoch exactly
where the interrupted one stopped.

The data module saves `resume_position(trainer)` in each checkpoint (its state_dict) and, when resuming, calls
`sampler.resume_at(epoch, samples)`: the first iteration then skips the samples this process already trained on.
"""


import torch
from torch.utils.data import DistributedSampler


class ResumableSampler(DistributedSampler):
    """A shuffled permutation of the dataset per epoch (seeded by seed + epoch), shared out among `num_replicas`
    processes (process `rank` takes every num_replicas-th index; the tail that does not divide evenly is
    dropped). A DistributedSampler, so Lightning keeps it under DDP rather than wrapping it, and calls set_epoch.

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
        return self._iterate(self.order(epoch)[start:])

    def order(self, epoch: int) -> torch.Tensor:
        """This process's share of `epoch`, in order."""
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch))
        else:
            order = torch.arange(n)
        return order[: self.total_size][self.rank :: self.num_replicas]

    @staticmethod
    def _iterate(order: torch.Tensor):
        for chunk in order.split(1 << 14):  # a Python list of millions of ints takes a while: a piece at a time
            yield from chunk.tolist()


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
