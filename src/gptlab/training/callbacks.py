"""Callbacks: training throughput (tokens/s and model FLOPs utilisation); text samples at each validation."""

import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.strategies import FSDPStrategy

from gptlab.config import components
from gptlab.data.tokenizer import Tokenizer
from gptlab.model.decode import complete
from gptlab.model.gpt import GPT
from gptlab.training.flops import peak_flops


class Throughput(components.Throughput, L.Callback):
    """Logs perf/tokens_per_sec over the last `window` steps, and perf/mfu: model FLOPs (GPT.flops_per_token) per
    second of one device over its peak. peak_flops: a number, or "auto": Lightning's datasheet table for known
    GPUs, measured matmul FLOP/s on CPUs (gptlab.training.flops), in the dtype the run computes in; null: no MFU.
    The first `skip` steps (start-up, compilation) are left out of the run's average, kept in `tokens_per_sec`
    for the final summary.

    Not Lightning's ThroughputMonitor: it has no peak for CPUs (get_available_flops knows GPUs and TPUs only), and
    it needs the FLOPs of a batch up front, which its measure_flops takes from a meta-device run that the adaptive
    head (a data-dependent split of rows into clusters) cannot do; tests/test_speedrun.py checks flops_per_token
    against measure_flops where it can run."""

    def __post_init__(self):
        super().__post_init__()
        self.peak = None if self.peak_flops == "auto" else self.peak_flops  # the number used, once resolved
        self.tokens_per_sec = self.mfu = None  # the run's averages, for its summary
        self._steps = 0

    def on_train_start(self, trainer, pl_module):
        if self.peak_flops == "auto":
            self.peak = peak_flops(pl_module.device, trainer.precision)
        self._steps, self._tokens, self._t_start = 0, 0, None
        self._win_tokens, self._win_t = 0, time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        tokens = batch[0].numel() * trainer.world_size
        self._steps += 1
        if self._steps == self.skip:
            self._t_start, self._tokens = time.perf_counter(), 0
        elif self._steps > self.skip:
            self._tokens += tokens
        self._win_tokens += tokens
        if self._steps % self.window == 0:
            now = time.perf_counter()
            rate = self._win_tokens / (now - self._win_t)
            metrics = {"perf/tokens_per_sec": rate}
            if self.peak:
                metrics["perf/mfu"] = self._mfu(rate, trainer, pl_module)
            pl_module.log_dict(metrics)
            self._win_tokens, self._win_t = 0, now

    def on_train_end(self, trainer, pl_module):
        if self._t_start is not None and self._tokens > 0:
            self.tokens_per_sec = self._tokens / (time.perf_counter() - self._t_start)
            if self.peak:
                self.mfu = self._mfu(self.tokens_per_sec, trainer, pl_module)

    def _mfu(self, tokens_per_sec, trainer, pl_module):
        """Model FLOPs per second of one device, as a fraction of its peak."""
        return pl_module.model.flops_per_token() * tokens_per_sec / trainer.world_size / self.peak


def gathered_model(strategy, pl_module):
    """A whole copy of an FSDP-sharded module's GPT on rank 0, on its device (None on the other ranks). Every rank
    must call it: the shards are gathered from all of them."""
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    full = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
    with FSDP.state_dict_type(strategy.model, StateDictType.FULL_STATE_DICT, full):
        state = strategy.model.state_dict()
    if not strategy.is_global_zero:
        return None
    model = GPT(pl_module.model.config)
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    return model.to(pl_module.device).eval()


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
