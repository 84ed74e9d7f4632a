"""Callbacks that let a run survive being stopped, and stop it when training breaks down.

- `ResumeCheckpoint`: writes <dirpath>/last.ckpt every N steps and/or minutes, at the end of training, and when
  SIGTERM (preemption) or Ctrl-C arrives; then the run exits (143 after SIGTERM, 130 after Ctrl-C), ready for
  `resume=true`.
- `StepSeed`: reseeds the random generators from (seed, epoch, batch) before each training batch, so dropout in
  a resumed run draws exactly what the uninterrupted run would have drawn.
- `NanGuard`: a NaN or Inf loss stops training with an error naming the step, before the optimizer step, so no
  checkpoint with broken weights is written; or, with action=skip, drops that batch's update and goes on.
"""

import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from gptlab.config import components
from gptlab.errors import GptlabError

log = logging.getLogger(__name__)

SIGTERM_EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT: Ctrl-C


@dataclass(eq=False, kw_only=True)
class ResumeCheckpoint(components.ResumeCheckpoint, L.Callback):
    """Keeps `dirpath`/last.ckpt up to date for resuming: after every `every_n_train_steps` optimizer steps and/or
    every `every_n_minutes` of training (either may be None), at the end of training, on SIGTERM and on Ctrl-C.
    After SIGTERM, Lightning stops at the end of the batch; this callback saves then, prints one line saying how to
    resume, and makes the process exit with code 143. The first Ctrl-C does the same (exit code 130); a second
    one stops at once (Python's KeyboardInterrupt; Lightning exits with code 1) and saves nothing.

    clock: the seconds clock every_n_minutes reads (time.monotonic); tests drive a fake one."""

    clock: Callable[[], float] = time.monotonic

    def __post_init__(self):
        super().__post_init__()
        self.path = Path(self.dirpath) / "last.ckpt"
        self._saved_step, self._last_time = None, self.clock()
        self._interrupted, self._previous_sigint = False, None  # Ctrl-C seen; the SIGINT handler before this one

    def on_train_start(self, trainer, pl_module):
        self._saved_step, self._last_time = trainer.global_step, self.clock()  # just loaded, or step 0
        if threading.current_thread() is threading.main_thread():  # only there can a signal handler be set
            self._previous_sigint = signal.signal(signal.SIGINT, lambda signum, frame: self._on_sigint(trainer))

    def _on_sigint(self, trainer):
        # Python's own KeyboardInterrupt could stop the optimizer half-way through its update, leaving nothing to
        # save. Lightning's stop for SIGTERM waits for the end of the step (its metrics logged), on every rank.
        signal.signal(signal.SIGINT, self._previous_sigint)  # a second Ctrl-C stops at once, unsaved
        self._interrupted = True
        trainer._signal_connector.received_sigterm = True
        print("gptlab: Ctrl-C: training stops after this step, saved for resume=true (Ctrl-C again: stop now, "
              "unsaved)", file=sys.stderr, flush=True)

    def _restore_sigint(self):
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == self._saved_step:
            return
        due = bool(self.every_n_train_steps) and step % self.every_n_train_steps == 0
        due |= bool(self.every_n_minutes) and self.clock() - self._last_time >= 60 * self.every_n_minutes
        due |= trainer.received_sigterm
        # every rank must take part in a save: decide together (clocks and signals differ between ranks)
        if trainer.strategy.reduce_boolean_decision(due, all=False):
            self._save(trainer)

    def on_train_end(self, trainer, pl_module):
        if trainer.global_step != self._saved_step:
            self._save(trainer)
        elif trainer.is_global_zero and self.path.is_file():  # saved at the last step, the best maybe after it
            self._share_with_best(trainer)
        self._restore_sigint()

    def on_exception(self, trainer, pl_module, exception):
        self._restore_sigint()
        if not isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            return
        fitting, by = trainer.state.fn == "fit", "Ctrl-C" if self._interrupted else "SIGTERM"
        if isinstance(exception, SIGTERMException):
            exception.code = INTERRUPTED_EXIT_CODE if self._interrupted else SIGTERM_EXIT_CODE  # the process's
            if fitting and trainer.global_step != self._saved_step:  # during validation, between two steps
                self._save(trainer)
        else:  # a second Ctrl-C, or one outside training: Python's KeyboardInterrupt, wherever it landed
            by = "Ctrl-C"
        if trainer.is_global_zero:
            step, saved = trainer.global_step, self._saved_step
            done = ("training had finished" if not fitting else f"saved {self.path} at step {step}" if saved == step
                    else f"{self.path} holds step {saved}" if saved else "nothing saved yet")
            print(f"gptlab: stopped by {by}; {done}. Run the same command with resume=true to continue.",
                  file=sys.stderr, flush=True)

    def _save(self, trainer):
        if trainer.fast_dev_run:  # a smoke test writes no checkpoints, like Lightning's own
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # the full state: optimizer, loops, callbacks
        self._saved_step, self._last_time = trainer.global_step, self.clock()
        if trainer.is_global_zero:
            self._share_with_best(trainer)

    def _share_with_best(self, trainer):
        """When the best checkpoint was written at this same step it holds the same weights: one file on disk for
        both names, a hard link to last.ckpt (the one with the later state). A later last.ckpt is a new file
        (written atomically), so the best stays as it was."""
        for cb in trainer.checkpoint_callbacks:
            best = Path(getattr(cb, "best_model_path", "") or "")
            # saved at this step (Lightning's record of the step its ModelCheckpoint last saved at), and that save
            # is the best (its score is this step's): with save_top_k > 1 this step's file may not be the best
            score, best_score = trainer.callback_metrics.get(getattr(cb, "monitor", None) or ""), cb.best_model_score
            if (getattr(cb, "_last_global_step_saved", None) != trainer.global_step or not best.is_file()
                    or score is None or best_score is None or float(score) != float(best_score)):
                continue
            if best.resolve() == self.path.resolve() or best.stat().st_ino == self.path.stat().st_ino:
                continue
            tmp = best.with_name(f".{best.name}.link.tmp")
            try:
                tmp.unlink(missing_ok=True)
                os.link(self.path, tmp)
                os.replace(tmp, best)
            except OSError:  # a filesystem without hard links: two files, as before
                tmp.unlink(missing_ok=True)


def step_seed(seed: int, epoch: int, batch_idx: int, rank: int) -> int:
    """A 63-bit seed for one training batch of one process."""
    mixed = seed
    for part in (epoch, batch_idx, rank):
        mixed = (mixed * 6364136223846793005 + part + 1442695040888963407) % (1 << 63)
    return mixed


class StepSeed(components.StepSeed, L.Callback):
    """Before each training batch, seed torch (CPU and CUDA), numpy and random from (seed, epoch, batch, rank):
    the randomness of a batch then depends on nothing that happened before it, so a resumed run is exact."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        s = step_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)
        torch.manual_seed(s)
        np.random.seed(s % (1 << 32))
        random.seed(s)


class NonFiniteLossError(GptlabError):
    pass


class NanGuard(components.NanGuard, L.Callback):
    """Watches the training loss. action="stop": a NaN or Inf loss raises NonFiniteLossError naming the step,
    before the optimizer step (so the weights and the checkpoints on disk stay good). action="skip": that step's
    update is dropped (the gradients are cleared, so the optimizer leaves weights and state alone; the schedule
    still advances), with a warning, and training goes on. `inject_at_step` (for tests) turns the loss of that
    step (1-based) into NaN."""

    def __post_init__(self):
        super().__post_init__()
        self.skipped_steps: list[int] = []
        self._bad = None

    def on_before_backward(self, trainer, pl_module, loss):
        if self.inject_at_step is not None and trainer.global_step + 1 == self.inject_at_step:
            loss.mul_(float("nan"))  # NaN loss and NaN gradients, like a real blow-up
        bad = ~torch.isfinite(loss.detach()).all()
        self._bad = bad if self._bad is None else self._bad | bad  # accumulated micro-batches

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        bad = self._bad is not None and bool(self._bad)
        self._bad = None
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):  # a NaN on any rank counts
            return
        step = trainer.global_step + 1
        where = f"step {step} (epoch {trainer.current_epoch}, batch {trainer.fit_loop.epoch_loop.batch_idx})"
        if self.action == "stop":
            raise NonFiniteLossError(
                f"training loss is NaN or Inf at {where}; stopped before the optimizer step, so the weights are "
                f"not updated and the checkpoints already written are kept. Lower optimizer.lr, check "
                f"trainer.gradient_clip_val or trainer.precision, or set callbacks.nan_guard.action=skip."
            )
        if getattr(trainer.precision_plugin, "scaler", None) is None:  # fp16's GradScaler skips it by itself
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None  # the optimizer skips parameters without a gradient
        self.skipped_steps.append(step)
        log.warning("NaN or Inf training loss at %s: update skipped (%d so far)", where, len(self.skipped_steps))
