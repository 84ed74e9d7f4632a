"""Callbacks: training throughput (tokens/s and model FLOPs utilisation)."""

import time

import lightning as L


class Throughput(L.Callback):
    """Logs perf/tokens_per_sec over the last `window` steps, and perf/mfu when the peak FLOP/s of one device is
    known (`peak_flops`, e.g. 989e12 for an H100's dense bf16). The first `skip` steps (start-up, compilation)
    are left out of the run's average, kept in `tokens_per_sec` for the final summary."""

    def __init__(self, window: int = 20, skip: int = 2, peak_flops: float | None = None):
        self.window, self.skip, self.peak_flops = window, skip, peak_flops
        self.tokens_per_sec = None
        self._steps = 0

    def on_train_start(self, trainer, pl_module):
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
            if self.peak_flops:
                flops = pl_module.model.flops_per_token() * rate / trainer.world_size
                metrics["perf/mfu"] = flops / self.peak_flops
            pl_module.log_dict(metrics)
            self._win_tokens, self._win_t = 0, now

    def on_train_end(self, trainer, pl_module):
        if self._t_start is not None and self._tokens > 0:
            self.tokens_per_sec = self._tokens / (time.perf_counter() - self._t_start)
