"""A wall-clock budget turned into a number of training steps, re-planned as the run goes, the same on every rank.

The learning-rate schedule is a function of the step alone (schedulers.py), so the budget moves the step where
training and the schedule's decay end. Rank 0 times the training steps (validations left out) every
`measure_steps` steps (sooner when they take longer than 2% of the budget) and works out how many more fit
before the deadline, keeping back the validations still to come and a `reserve` share of the time left; every
rank gets its count (a broadcast), so DDP replicas stay identical. The end keeps moving to the last
measurement; the schedule bends from the current step on, never changing a learning rate already used
(schedulers.WarmupDecay.move_end: a linear decay under way goes on from where it is to the new end), so a machine
that speeds up or slows down half-way still ends on its plan with the learning rate fully decayed. A cosine decay
cannot bend: its first plan, made before it begins, stands. The plan and the training time spent are stored in
the checkpoint, so a resumed run goes on with them.

Two deadlines: `max_time` (trainer.max_time, Lightning's meaning) for training and its validations, where
Lightning's Timer stops training as a guard; and `run_time` for the whole command from its start, which keeps back
the final validation and test too, estimated from the validations so far. The clock is a parameter (`clock`,
`started`): tests drive a fake one.
"""

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import torch

from gptlab.config import components
from gptlab.config.declare import Duration
from gptlab.errors import GptlabError
from gptlab.training.schedulers import WarmupDecay

log = logging.getLogger(__name__)


def set_total_steps(trainer, total_steps: int, step: int | None = None) -> None:
    """End training at `total_steps`, and every step-based schedule's decay there too: from `step` on (the
    learning rates before it, used already, unchanged), or from the start (a run about to begin)."""
    trainer.fit_loop.epoch_loop.max_steps = total_steps
    for fn in schedules(trainer):
        if step is None:
            fn.total_steps = total_steps
        else:
            fn.move_end(total_steps, step)


def tokens_per_step(trainer) -> int:
    """Training tokens in one optimizer step: every process's micro-batches of windows."""
    dm = trainer.datamodule
    return dm.batch_size * dm.block_size * trainer.accumulate_grad_batches * trainer.world_size


class FlopBudget(components.FlopBudget, L.Callback):
    """A compute budget (train_flops) as a number of steps: the FLOPs the model trains on a token
    (GPTLitModule.flops_per_token: known once the adaptive head has its clusters' shares of the data) times the
    tokens of a step. Set as fitting starts, before anything is logged and before the time budget reads
    trainer.max_steps as its cap; the schedule's decay ends there too. Exact steps, so that the runs of an IsoFLOP
    sweep train what they are named after; a time budget can still end one sooner (result.json's train_tokens
    says what it trained)."""

    def on_fit_start(self, trainer, pl_module):
        if self.flops is None:
            return
        tokens = tokens_per_step(trainer)
        steps = round(self.flops / (pl_module.flops_per_token * tokens))
        if steps < 1:
            raise GptlabError(f"train_flops={self.flops:g}: less than one optimizer step, which trains "
                              f"{pl_module.flops_per_token * tokens:.3g} FLOPs ({tokens:,} tokens × "
                              f"{pl_module.flops_per_token:.3g} FLOPs a token)")
        trainer.fit_loop.epoch_loop.max_steps = steps
        for fn in schedules(trainer):  # a resumed run then gets its checkpoint's schedule back: the same plan
            fn.plan(steps)
        if trainer.is_global_zero:
            log.info("train_flops=%g: %d steps of %d tokens at %.3g FLOPs a token", self.flops, steps, tokens,
                     pl_module.flops_per_token)


def schedules(trainer) -> list[WarmupDecay]:
    return [fn for config in trainer.lr_scheduler_configs for fn in getattr(config.scheduler, "lr_lambdas", [])
            if isinstance(fn, WarmupDecay)]


def validations_after(step: int, n: int, val_every: int | None) -> int:
    """Validations during the `n` training steps after `step`: one after every multiple of `val_every`, and one
    after the last step where that is not one."""
    if n <= 0:
        return 0
    if not val_every:
        return 1
    return (step + n) // val_every - step // val_every + ((step + n) % val_every != 0)


def steps_that_fit(seconds_left: float, step: int, per_step: float, per_validation: float, val_every: int | None,
                   reserve: float) -> int:
    """How many training steps after `step` fit in `seconds_left`: each takes `per_step` seconds, a validation
    (`per_validation` seconds) follows every step that is a multiple of `val_every` and the last one, and a
    `reserve` share of the time is kept back."""
    usable = seconds_left * (1 - reserve)

    def cost(n):
        return n * per_step + validations_after(step, n, val_every) * per_validation

    lo, hi = 0, max(int(usable / per_step), 0) + 1  # cost(lo) fits (or nothing does), cost(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if cost(mid) <= usable else (lo, mid)
    return lo


def process_age() -> float:
    """Seconds since this process started (its start-up before gptlab ran included); 0 where /proc is not."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass(eq=False, kw_only=True)
class TimeBudget(components.TimeBudget, L.Callback):
    """The step budget of a run with a `max_time` or a `run_time` (see the module docstring); nothing happens
    without either, or under trainer.deterministic (its schedule must not depend on the machine's speed).

    clock: the seconds clock the budget reads (time.monotonic); started: the clock's reading when the command
    started (None: now, less this process's age), for `run_time`."""

    clock: Callable[[], float] = time.monotonic
    started: float | None = None

    def __post_init__(self):
        super().__post_init__()
        self.budget, self.whole = Duration.seconds(self.max_time), Duration.seconds(self.run_time)
        if self.started is None:
            self.started = self.clock() - process_age()
        self.total_steps = None  # the planned last step (stored in checkpoints)
        self.fixed = False  # the decay has begun: the plan stands
        self.per_step = None  # seconds per training step, last measured
        self.trained = 0.0  # seconds of training (with its validations) before this process: a resumed run's
        self._stale = None  # a resumed checkpoint's plan, made under another budget than this run's
        self._val_seconds, self._val_batches = 0.0, 0  # every validation so far: for those still to come
        self._window = None  # (step, clock) where the current measurement began
        self._excluded = 0.0  # validation seconds inside the current measurement
        self._fit_start = self._val_start = None

    @property
    def active(self) -> bool:
        return bool(self.budget or self.whole) and not torch.are_deterministic_algorithms_enabled()

    # --- Lightning's hooks

    def on_train_start(self, trainer, pl_module):
        self._fit_start, self._first_step, self._window = self.clock(), trainer.global_step, None
        self._cap = trainer.max_steps  # the configured trainer.max_steps: the plan never goes past it
        if self.active and self.total_steps is not None:  # resumed: its plan, re-planned from here on this machine
            set_total_steps(trainer, self.total_steps)
        elif self._stale is not None and trainer.max_steps > 0:
            log.warning("resumed from a run whose time budget planned %d steps; this run's budget differs: its "
                        "schedule ends at trainer.max_steps=%d instead", self._stale, trainer.max_steps)
            set_total_steps(trainer, trainer.max_steps)

    def on_validation_start(self, trainer, pl_module):
        self._val_start = self.clock()

    def on_validation_end(self, trainer, pl_module):
        if self._val_start is None or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        spent = self.clock() - self._val_start
        self._excluded += spent
        self._val_seconds += spent
        self._val_batches += int(sum(trainer.num_val_batches))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self.active:
            return
        step, now = trainer.global_step, self.clock()
        if self._window is None:
            if step - self._first_step >= self.skip_steps:  # start-up and compilation left out of the timing
                self._window, self._excluded = (step, now), 0.0
            return
        steps = step - self._window[0]
        due = steps >= self.measure_steps or (steps >= 2 and now - self._window[1] - self._excluded >=
                                              self.longest_window())
        if trainer.world_size > 1:  # rank 0's clock decides for every rank: re-planning is a collective
            due = bool(trainer.strategy.broadcast(due, src=0))
        if not due:
            return
        self.per_step = (now - self._window[1] - self._excluded) / steps
        self._window, self._excluded = (step, now), 0.0
        self.replan(trainer, step, now)

    def on_train_end(self, trainer, pl_module):
        if self._fit_start is not None:
            self.trained += self.clock() - self._fit_start
            self._fit_start = None

    # --- the plan

    def replan(self, trainer, step: int, now: float) -> None:
        """Move the last step to what fits before the deadline, on every rank (the schedule bends from `step` on:
        WarmupDecay.move_end); once a cosine decay has begun, the plan stands."""
        fns = schedules(trainer)
        if self.fixed or (self.total_steps is not None and not all(f.movable(step) for f in fns)):
            self.fixed = True
            return
        fit = steps_that_fit(self.seconds_left(trainer, now), step, self.per_step, self.per_validation(trainer),
                             self.val_every(trainer), self.reserve)
        total = step + max(fit, 1)
        if self._cap > 0:
            total = min(total, self._cap)
        total = int(trainer.strategy.broadcast(total, src=0))  # rank 0's measurement decides for every rank
        moved = self.total_steps is None or abs(total - self.total_steps) > 0.01 * self.total_steps
        self.total_steps = total
        set_total_steps(trainer, total, step)
        if moved and trainer.is_global_zero:
            bent = [f.anchor[0] for f in fns if f.anchor]
            decay = f"the decay bent at step {max(bent)} to end there" if bent else \
                f"the decay begins at step {min((f.decay_start() for f in fns), default=total)}"
            log.info("time budget: %d steps (%.3f s a step, %.0f s left; %s)", total, self.per_step,
                     self.seconds_left(trainer, now), decay)

    def longest_window(self) -> float:
        """Seconds after which a measurement ends even short of measure_steps steps (2 at least): 2% of the budget,
        so that a machine that becomes many times slower is re-planned for within seconds, not 25 slow steps."""
        return 0.02 * min(t for t in (self.budget, self.whole) if t)

    def seconds_left(self, trainer, now: float) -> float:
        """Seconds left for training: to max_time (training so far counted, a resumed run's too), and to run_time
        less the final validation and test, whichever is sooner."""
        left = []
        if self.budget:
            left.append(self.budget - self.trained - (now - self._fit_start))
        if self.whole:
            left.append(self.started + self.whole - now - self.final_seconds(trainer))
        return min(left)

    def per_validation(self, trainer) -> float:
        """Seconds one validation during training takes: measured, else none yet (0)."""
        if not self._val_batches:
            return 0.0
        return self._val_seconds / self._val_batches * int(sum(trainer.num_val_batches) or 0)

    def final_seconds(self, trainer) -> float:
        """The final validation and test, estimated from the validations so far: the full validation split's
        batches (times final_batches, a number or a share), the test split as many times larger as it has more
        tokens; before the first validation, the training step's time per batch stands in (an overestimate)."""
        per_batch = self._val_seconds / self._val_batches if self._val_batches else (self.per_step or 0.0)
        loaders = trainer.val_dataloaders
        full = len(loaders) if loaders is not None and hasattr(loaders, "__len__") else 0
        batches = min(full, self.final_batches) if isinstance(self.final_batches, int) else full * self.final_batches
        stats = getattr(getattr(trainer, "datamodule", None), "stats", {}) or {}
        ratio = stats["test"].tokens / stats["valid"].tokens if "test" in stats and "valid" in stats else 1.0
        return per_batch * batches * (1 + ratio)

    def val_every(self, trainer) -> int | None:
        """Optimizer steps between validations (Lightning counts batches: with accumulation, more of them)."""
        every = trainer.val_check_batch
        return max(int(every) // trainer.accumulate_grad_batches, 1) if isinstance(every, int) else None

    def eta(self, trainer) -> float | None:
        """Seconds until training ends on its plan (its validations included), or None before the first plan."""
        if self.per_step is None or self.total_steps is None:
            return None
        step = trainer.global_step
        n = max(self.total_steps - step, 0)
        return n * self.per_step + validations_after(step, n, self.val_every(trainer)) * self.per_validation(trainer)

    # --- checkpoints

    def state_dict(self):
        trained = self.trained + (self.clock() - self._fit_start if self._fit_start is not None else 0.0)
        return {"total_steps": self.total_steps, "budget": self.budget, "fixed": self.fixed, "trained": trained}

    def load_state_dict(self, state_dict):
        if state_dict.get("budget") == self.budget:  # the same budget as the run being resumed
            self.total_steps, self.fixed = state_dict.get("total_steps"), state_dict.get("fixed", True)
            self.trained = state_dict.get("trained", 0.0)
        else:
            self._stale = state_dict.get("total_steps")


class ValidateLastStep(L.Callback):
    """Validates after the last training step (trainer.max_steps, or the step budget set above) where that step is
    not a validation step already: otherwise the steps after the last `val_check_interval`, those at the lowest
    learning rate, are never scored, and the best checkpoint (the final scores') cannot be the final weights."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True  # Lightning validates when a stop is requested (as for max_time)
