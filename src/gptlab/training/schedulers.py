"""Per-step learning-rate schedules: a factor of each parameter group's base learning rate, a function of the step
alone. A time budget (trainer.max_time) becomes a number of steps, re-planned as the run goes (budget.py), which
moves total_steps.

A schedule is built from its config (its keys: gptlab/config/components.py) and called with the optimizer:
`Cosine(total_steps=2000, warmup_steps=50, min_lr_ratio=0.1)(optimizer)` is a LambdaLR."""

import math

from torch.optim.lr_scheduler import LambdaLR

from gptlab.config import components


class WarmupDecay:
    """The factor at a step: linear warmup over warmup_steps (at most half the run, so short runs still decay),
    then a decay to min_lr_ratio at total_steps, then min_lr_ratio. cosine and linear decay from the end of the
    warmup; wsd (warmup-stable-decay) holds the peak and decays linearly over the last decay_fraction of the run.
    An object rather than a closure so that LambdaLR saves its fields, total_steps included, in the checkpoint.

    The end can move while the run goes (a time budget re-plans it: `move_end`) without touching the learning
    rates already used: before the decay begins, it moves the decay with it; once the decay has begun, a linear
    decay goes on from the factor reached (`anchor`: that step and factor) straight to the new end. A cosine
    decay cannot bend that way: its end is fixed once it begins (`movable`)."""

    decay_fraction = 1.0  # cosine and linear; also what a checkpoint of before wsd holds
    anchor = None  # (step, factor): where a linear decay re-planned late goes on from

    def __init__(self, shape, total_steps, warmup_steps, min_lr_ratio, decay_fraction=None):
        self.shape, self.min_lr_ratio = shape, float(min_lr_ratio)
        self.warmup_wanted = int(warmup_steps)  # the config's, for `plan`
        self.plan(total_steps)  # the warmup is fixed here: a later move_end keeps it
        if decay_fraction is not None:
            self.decay_fraction = float(decay_fraction)

    def plan(self, total_steps) -> None:
        """The length of a run not begun yet (a compute budget decides it once the model is built): its end, and
        its warmup at most half of it."""
        self.total_steps = int(total_steps)
        self.warmup_steps = min(self.warmup_wanted, self.total_steps // 2)

    def decay_start(self, total_steps=None) -> int:
        """The step where the decay begins, for a run ending at total_steps (this schedule's own by default)."""
        total = self.total_steps if total_steps is None else total_steps
        if self.shape != "wsd":
            return self.warmup_steps
        return max(self.warmup_steps, total - round(self.decay_fraction * total))

    def movable(self, step: int) -> bool:
        """Whether the end can still move at `step` without a jump in the learning rate."""
        return self.shape != "cosine" or step < self.decay_start()

    def move_end(self, total_steps: int, step: int) -> None:
        """End the decay at total_steps instead, the factors of the steps before `step` (those used) unchanged.
        Where the decay would have begun by `step` (it had, or the new end brings its start before `step`), it goes
        on linearly from the factor of `step` to the new end."""
        if step > self.warmup_steps and min(self.decay_start(), self.decay_start(total_steps)) <= step:
            self.anchor = (int(step), float(self(step)))
        self.total_steps = int(total_steps)

    def __call__(self, step):
        warmup = self.warmup_steps
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if self.anchor is not None and step >= self.anchor[0]:
            start, factor = self.anchor
            progress = min(max((step - start) / max(self.total_steps - start, 1), 0.0), 1.0)
            return factor - (factor - self.min_lr_ratio) * progress
        start = self.decay_start()
        progress = min(max((step - start) / max(self.total_steps - start, 1), 0.0), 1.0)
        if self.shape == "cosine":
            return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1 - (1 - self.min_lr_ratio) * progress


class Cosine(components.Cosine):
    """Linear warmup, then cosine decay to min_lr_ratio × lr at total_steps (conf/scheduler/cosine.yaml)."""

    def __call__(self, optimizer) -> LambdaLR:
        return LambdaLR(optimizer, WarmupDecay("cosine", self.total_steps, self.warmup_steps, self.min_lr_ratio))


class Linear(components.Linear):
    """Linear warmup, then linear decay to min_lr_ratio × lr at total_steps (conf/scheduler/linear.yaml)."""

    def __call__(self, optimizer) -> LambdaLR:
        return LambdaLR(optimizer, WarmupDecay("linear", self.total_steps, self.warmup_steps, self.min_lr_ratio))


class WSD(components.WSD):
    """Linear warmup, the peak learning rate, then a linear decay to min_lr_ratio × lr over the last
    decay_fraction of the run (conf/scheduler/wsd.yaml)."""

    def __call__(self, optimizer) -> LambdaLR:
        return LambdaLR(optimizer, WarmupDecay("wsd", self.total_steps, self.warmup_steps, self.min_lr_ratio,
                                               self.decay_fraction))


class Constant(components.Constant):
    """Linear warmup, then the base learning rate (conf/scheduler/constant.yaml)."""

    def __call__(self, optimizer) -> LambdaLR:
        return LambdaLR(optimizer, lambda step: min((step + 1) / (self.warmup_steps + 1), 1.0))
