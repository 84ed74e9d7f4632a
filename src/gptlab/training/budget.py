"""A wall-clock training budget (`trainer.max_time`) turned into a number of steps, once, the same on every rank.

The learning-rate schedule is a function of the step alone (schedulers.py). A run with a time budget measures its
own speed over its first steps, on rank 0, works out how many steps fit in the budget, and broadcasts that number:
every rank then decays its learning rate to the same end step, so DDP replicas stay identical. The number is
stored in the checkpoint (this callback's state and the scheduler's), so a resumed run follows the schedule it
started with. Lightning's Timer still stops training at `max_time`, as a guard.
"""

import logging
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer

from gptlab.config import components
from gptlab.training.schedulers import WarmupDecay, seconds

log = logging.getLogger(__name__)


def set_total_steps(trainer, total_steps: int) -> None:
    """End training at `total_steps`, and every step-based schedule's decay there too."""
    trainer.fit_loop.epoch_loop.max_steps = total_steps
    for config in trainer.lr_scheduler_configs:
        for fn in getattr(config.scheduler, "lr_lambdas", []):
            if isinstance(fn, WarmupDecay):
                fn.total_steps = total_steps


class TimeBudget(components.TimeBudget, L.Callback):
    """Measures the seconds per step over `measure_steps` steps after the first `skip_steps` (start-up,
    compilation), then sets the run's step budget to what fits in `max_time` less `reserve` (a fraction, for the
    validations and checkpoints still to come), capped by trainer.max_steps. Nothing happens without a max_time,
    or under trainer.deterministic (its schedule must not depend on the machine's speed)."""

    def __post_init__(self):
        super().__post_init__()
        self.budget = seconds(self.max_time)
        self.total_steps = None  # the step budget, once measured (or restored from a checkpoint)
        self._start, self._first_step = None, 0  # (step, time) where the measurement began; the run's first step
        self._stale = None  # a resumed checkpoint's step budget, set under another budget than this run's

    @property
    def active(self) -> bool:
        return bool(self.budget) and not torch.are_deterministic_algorithms_enabled()

    def on_train_start(self, trainer, pl_module):
        self._start, self._first_step = None, trainer.global_step
        if self.active and self.total_steps is not None:  # resumed: keep the schedule the run started with
            set_total_steps(trainer, self.total_steps)
        elif self._stale is not None and trainer.max_steps > 0:
            # resumed from a run whose schedule another budget (or none) had moved: back to this run's steps
            log.warning("resumed from a run whose time budget set %d steps; this run's budget differs: its "
                        "schedule ends at trainer.max_steps=%d instead", self._stale, trainer.max_steps)
            set_total_steps(trainer, trainer.max_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self.active or self.total_steps is not None:
            return
        step, now = trainer.global_step, time.monotonic()
        if self._start is None:
            if step - self._first_step >= self.skip_steps:
                self._start = (step, now)
            return
        steps = step - self._start[0]
        if steps < self.measure_steps:
            return
        per_step = (now - self._start[1]) / steps
        timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
        elapsed = timer.time_elapsed("train") if timer is not None else 0.0
        fit = int((self.budget * (1 - self.reserve) - elapsed) / per_step)
        total = step + max(fit, 1)  # at least one more step
        if trainer.max_steps and trainer.max_steps > 0:
            total = min(total, trainer.max_steps)
        total = int(trainer.strategy.broadcast(total, src=0))  # rank 0's measurement decides for every rank
        self.total_steps = total
        set_total_steps(trainer, total)
        if trainer.is_global_zero:
            log.info("time budget %.0f s: %d steps (%.3f s per step over steps %d-%d, %.0f s spent so far)",
                     self.budget, total, per_step, self._start[0], step, elapsed)

    def state_dict(self):
        return {"total_steps": self.total_steps, "budget": self.budget}

    def load_state_dict(self, state_dict):
        if state_dict.get("budget") == self.budget:  # the same budget as the run being resumed
            self.total_steps = state_dict.get("total_steps")
        else:
            self._stale = state_dict.get("total_steps")


class ValidateLastStep(L.Callback):
    """Validates after the last training step (trainer.max_steps, or the step budget set above) where that step is
    not a validation step already: otherwise the steps after the last `val_check_interval`, those at the lowest
    learning rate, are never scored, and the best checkpoint (the final scores') cannot be the final weights."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True  # Lightning validates when a stop is requested (as for max_time)
