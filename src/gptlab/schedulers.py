"""Per-step learning-rate schedules: a factor of each parameter group's base learning rate."""

import math

from torch.optim.lr_scheduler import LambdaLR


def _check(warmup_steps, total_steps, min_lr_ratio):
    if total_steps is None or total_steps <= 0:
        raise ValueError(f"scheduler.total_steps must be a positive number of steps, got {total_steps!r}")
    if warmup_steps < 0:
        raise ValueError(f"scheduler.warmup_steps must be >= 0, got {warmup_steps!r}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"scheduler.min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")


def cosine(optimizer, total_steps, warmup_steps=0, min_lr_ratio=0.1):
    """Linear warmup, then cosine decay to min_lr_ratio × lr at total_steps."""
    _check(warmup_steps, total_steps, min_lr_ratio)
    warmup_steps = min(warmup_steps, total_steps // 2)  # short (smoke-test) runs still decay

    def factor(step):
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def linear(optimizer, total_steps, warmup_steps=0, min_lr_ratio=0.0):
    """Linear warmup, then linear decay to min_lr_ratio × lr at total_steps."""
    _check(warmup_steps, total_steps, min_lr_ratio)
    warmup_steps = min(warmup_steps, total_steps // 2)

    def factor(step):
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return 1 - (1 - min_lr_ratio) * progress

    return LambdaLR(optimizer, factor)


def constant(optimizer, warmup_steps=0, total_steps=None):
    """Linear warmup, then the base learning rate."""
    return LambdaLR(optimizer, lambda step: min((step + 1) / (warmup_steps + 1), 1.0))
