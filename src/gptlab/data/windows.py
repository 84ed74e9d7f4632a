"""Token ids cut into windows: training samples (`TrainWindows`) and scoring windows that score every token once
(`EvalWindows`, evened out across processes by `PaddedWindows`)."""

import numpy as np
import torch
from torch.utils.data import Dataset

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
