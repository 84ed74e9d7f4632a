"""Per-step learning-rate schedules: a factor of each parameter group's base learning rate."""

import math
import time

from torch.optim.lr_scheduler import LambdaLR


def _check(warmup_steps, total_steps, min_lr_ratio):
    if total_steps is None or total_steps <= 0:
        raise ValueError(f"scheduler.total_steps must be a positive number of steps, got {total_steps!r}")
    if warmup_steps < 0:
        raise ValueError(f"scheduler.warmup_steps must be >= 0, got {warmup_steps!r}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"scheduler.min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")


def seconds(max_time):
    """Lightning's max_time ("DD:HH:MM:SS", a dict of days/hours/minutes/seconds, or seconds) in seconds."""
    if max_time is None:
        return None
    if isinstance(max_time, dict):
        return sum(float(max_time.get(k, 0)) * s for k, s in (("days", 86400), ("hours", 3600), ("minutes", 60),
                                                                ("seconds", 1)))
    if isinstance(max_time, str):
        d, h, m, s = (float(x) for x in max_time.split(":"))
        return d * 86400 + h * 3600 + m * 60 + s
    return float(max_time)


def _decay_progress(warmup_steps, total_steps, max_time):
    """Fraction of the decay done: by steps, or by wall-clock time when a time budget is set and runs out first
    (a run stopped by trainer.max_time still ends its schedule). The clock starts at the first step."""
    budget, start = seconds(max_time), []

    def progress(step):
        p = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        if budget:
            if not start:
                start.append(time.monotonic())
            p = max(p, (time.monotonic() - start[0]) / budget)
        return min(max(p, 0.0), 1.0)

    return progress


def cosine(optimizer, total_steps, warmup_steps=0, min_lr_ratio=0.1, max_time=None):
    """Linear warmup, then cosine decay to min_lr_ratio × lr at total_steps, or at max_time (see _decay_progress)
    when that comes first."""
    _check(warmup_steps, total_steps, min_lr_ratio)
    warmup_steps = min(warmup_steps, total_steps // 2)  # short (smoke-test) runs still decay
    decay_progress = _decay_progress(warmup_steps, total_steps, max_time)

    def factor(step):
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = decay_progress(step)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def linear(optimizer, total_steps, warmup_steps=0, min_lr_ratio=0.0, max_time=None):
    """Linear warmup, then linear decay to min_lr_ratio × lr at total_steps, or at max_time when that comes first."""
    _check(warmup_steps, total_steps, min_lr_ratio)
    warmup_steps = min(warmup_steps, total_steps // 2)
    decay_progress = _decay_progress(warmup_steps, total_steps, max_time)

    def factor(step):
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = decay_progress(step)
        return 1 - (1 - min_lr_ratio) * progress

    return LambdaLR(optimizer, factor)


def constant(optimizer, warmup_steps=0, total_steps=None):
    """Linear warmup, then the base learning rate."""
    return LambdaLR(optimizer, lambda step: min((step + 1) / (warmup_steps + 1), 1.0))
