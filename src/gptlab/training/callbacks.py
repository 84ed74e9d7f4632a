"""Callbacks: training throughput (tokens/s and model FLOPs utilisation), progress (a bar and a log line per
validation), text samples at each validation."""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.strategies import FSDPStrategy

from gptlab.config import components
from gptlab.data.tokenizer import Tokenizer
from gptlab.model.decode import complete
from gptlab.training.budget import TimeBudget
from gptlab.training.flops import peak_flops
from gptlab.training.sharding import gathered_model

log = logging.getLogger(__name__)


@dataclass(eq=False, kw_only=True)
class Throughput(components.Throughput, L.Callback):
    """Logs perf/tokens_per_sec over the last `window` steps, and perf/mfu: model FLOPs (the module's
    flops_per_token) per second of one device over its peak. peak_flops: a number, or "auto": Lightning's datasheet
    table for known GPUs, on CPUs the best matmul FLOP/s measured on this machine and kept in cache_dir
    (gptlab.training.flops), in the dtype the run computes in; null: no MFU. peak_source says which, for the run's
    summary. Time spent in validations is left out, so the rate is training's alone; the first `skip` steps
    (start-up, compilation) are left out of the run's average, kept in `tokens_per_sec` for the final summary.
    clock: the seconds clock it reads (tests drive a fake one).

    Not Lightning's ThroughputMonitor: it has no peak for CPUs (get_available_flops knows GPUs and TPUs only), and
    it needs the FLOPs of a batch up front, which its measure_flops takes from a meta-device run that the adaptive
    head (a data-dependent split of rows into clusters) cannot do; tests/training/test_speedrun.py checks
    flops_per_token against measure_flops where it can run."""

    clock: Callable[[], float] = time.perf_counter

    def __post_init__(self):
        super().__post_init__()
        self.peak = None if self.peak_flops == "auto" else self.peak_flops  # the number used, once resolved
        self.peak_source = "given as callbacks.throughput.peak_flops"
        self.tokens_per_sec = self.mfu = self.rate = None  # the run's averages, for its summary; the last window's
        self._steps = 0

    def on_train_start(self, trainer, pl_module):
        if self.peak_flops == "auto":
            self.peak, self.peak_source = peak_flops(pl_module.device, trainer.precision, self.cache_dir)
        self._steps, self._tokens, self._val_start, self._paused = 0, 0, None, 0.0
        self._win_tokens, self._win_t, self._win_paused = 0, self.clock(), 0.0  # validation seconds before the window
        self._t_start, self._paused_before = (self.clock(), 0.0) if self.skip == 0 else (None, 0.0)

    def on_validation_start(self, trainer, pl_module):
        self._val_start = self.clock()

    def on_validation_end(self, trainer, pl_module):
        if self._val_start is not None and trainer.state.fn == "fit":
            self._paused += self.clock() - self._val_start  # left out of both the window and the average
        self._val_start = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        tokens = batch[0].numel() * trainer.world_size
        self._steps += 1
        if self._steps == self.skip:
            self._t_start, self._tokens, self._paused_before = self.clock(), 0, self._paused
        elif self._steps > self.skip:
            self._tokens += tokens
        self._win_tokens += tokens
        if self._steps % self.window == 0:
            now = self.clock()
            self.rate = self._win_tokens / (now - self._win_t - self._paused + self._win_paused)
            metrics = {"perf/tokens_per_sec": self.rate}
            if self.peak:
                metrics["perf/mfu"] = self._mfu(self.rate, trainer, pl_module)
            pl_module.log_dict(metrics)
            self._win_tokens, self._win_t, self._win_paused = 0, now, self._paused

    def on_train_end(self, trainer, pl_module):
        if self._t_start is not None and self._tokens > 0:
            seconds = self.clock() - self._t_start - (self._paused - self._paused_before)
            self.tokens_per_sec = self._tokens / seconds
            if self.peak:
                self.mfu = self._mfu(self.tokens_per_sec, trainer, pl_module)

    def _mfu(self, tokens_per_sec, trainer, pl_module):
        """Model FLOPs per second of one device, as a fraction of its peak."""
        return pl_module.flops_per_token * tokens_per_sec / trainer.world_size / self.peak


class StepProgress(RichProgressBar):
    """Lightning's rich progress bar, counting optimizer steps up to the planned last one, which a time budget
    moves, instead of the batches of an epoch that never ends ("Epoch 0/-2"): its total and its time remaining
    follow the plan."""

    def _get_train_description(self, current_epoch: int) -> str:
        return f"{'training':{len(self.validation_description)}}"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.progress is not None and self.train_progress_bar_id is not None:
            total = max(trainer.max_steps, trainer.global_step) if trainer.max_steps > 0 else None
            self.progress.update(self.train_progress_bar_id, completed=trainer.global_step, total=total)


class ProgressLog(L.Callback):
    """One line per validation in the run's log (train.log, and the console): the step out of the planned steps,
    val ppl, tokens/s, the time so far and when training ends, so a run under nohup or SLURM can be followed with
    `tail -f train.log`. clock: the seconds clock it reads (tests drive a fake one)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.lines: list[str] = []

    def setup(self, trainer, pl_module, stage):
        self._params = sum(p.numel() for p in pl_module.parameters())  # before FSDP shards them

    def on_train_start(self, trainer, pl_module):
        self._start, self._first_step = self.clock(), trainer.global_step
        if trainer.is_global_zero:  # in place of Lightning's model summary: what is about to run, in one line
            log.info("training %.2fM parameters from step %d to %s, precision %s, %d process%s",
                     self._params / 1e6, trainer.global_step, trainer.max_steps if trainer.max_steps > 0 else "the end",
                     trainer.precision, trainer.world_size, "es" if trainer.world_size > 1 else "")

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or trainer.state.fn != "fit" or not trainer.is_global_zero:
            return
        step, planned, elapsed = trainer.global_step, trainer.max_steps, self.clock() - self._start
        budget = next((cb for cb in trainer.callbacks if isinstance(cb, TimeBudget) and cb.active), None)
        eta = budget.eta(trainer) if budget is not None else None
        if eta is None and step > self._first_step and planned > 0:
            eta = elapsed / (step - self._first_step) * (planned - step)  # at the speed so far
        meter = next((cb for cb in trainer.callbacks if isinstance(cb, Throughput)), None)
        ppl = trainer.callback_metrics.get("val/ppl")
        parts = [f"step {step}/{planned if planned > 0 else '?'}",
                 f"val ppl {float(ppl):.2f}" if ppl is not None else "val ppl -",
                 f"{meter.rate:,.0f} tokens/s" if meter is not None and meter.rate else "tokens/s -",
                 f"{clock_text(elapsed)} in", f"training ends in ~{clock_text(eta)}" if eta is not None else ""]
        self.lines.append(" · ".join(p for p in parts if p))
        log.info(self.lines[-1])


def clock_text(seconds: float) -> str:
    """0:07:05 for 425 seconds."""
    seconds = int(round(max(seconds, 0)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class SampleText(components.SampleText, L.Callback):
    """At each validation during training, continues a few fixed prompts and appends them to a text file in the
    run directory (`path`), and to a W&B table "samples" when the W&B logger is on. Greedy by default (or seeded
    sampling), so the samples change from one validation to the next only because the model did."""

    def __post_init__(self):
        super().__post_init__()
        self.rows = []  # (step, prompt, continuation) of every validation so far, for the W&B table

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or trainer.state.fn != "fit" or not self.prompts:
            return
        tokenizer = getattr(trainer.datamodule, "encoding", None) or Tokenizer(self.tokenizer)
        model = pl_module.model
        if isinstance(trainer.strategy, FSDPStrategy):  # sharded weights: rank 0 decodes with a gathered copy
            model = gathered_model(trainer.strategy, pl_module)
        if not trainer.is_global_zero:
            return
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        samples = [complete(model, tokenizer, p, self.max_new_tokens, temperature=self.temperature,
                            top_k=self.top_k, generator=generator) for p in self.prompts]
        step = trainer.global_step
        self.rows += [[step, p, s] for p, s in zip(self.prompts, samples, strict=True)]
        path = Path(self.path or Path(trainer.default_root_dir) / "samples.txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            loss = trainer.callback_metrics.get("val/loss")
            f.write(f"--- step {step}" + (f", val/loss {float(loss):.4f}" if loss is not None else "") + "\n")
            for p, s in zip(self.prompts, samples, strict=True):
                f.write(f"{p} >>>{s}".replace("\n", "\\n") + "\n")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(key="samples", columns=["step", "prompt", "sample"], data=self.rows, step=step)
