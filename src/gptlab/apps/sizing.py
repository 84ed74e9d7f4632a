"""Seconds per training step of a model option on this machine, timed as train.py trains it: the same config
(the default experiment's optimizer, schedule and precision; `auto` resolved as a run resolves it), the same
Trainer and callbacks, batches of real WikiText-2 text. What notebooks/model_size.ipynb measures with."""

from __future__ import annotations

import tempfile

from gptlab.apps.train import build, throughput
from gptlab.config.cli import CONF


def step_seconds(model: str, batch_size: int, steps: int = 8, overrides: tuple[str, ...] = ()) -> dict:
    """Train `model` (a conf/model option) for `steps` optimizer steps of `batch_size` sequences; returns seconds
    per step (its first steps left out, as the run's tokens/s leaves them out), tokens/s and the precision."""
    from hydra import compose, initialize_config_dir

    from gptlab.config.compose import setup

    setup()
    with tempfile.TemporaryDirectory() as out, initialize_config_dir(str(CONF), version_base=None):
        cfg = compose("train", overrides=[
            f"model={model}", f"data.batch_size={batch_size}", f"trainer.max_steps={steps}", f"paths.output_dir={out}",
            "name=sizing", "logger=none", "run_time=null", "trainer.max_time=null", "trainer.limit_val_batches=1",
            "trainer.val_check_interval=1000000", "callbacks.model_checkpoint=null", "callbacks.resume_checkpoint=null",
            "callbacks.sample_text=null", "callbacks.progress_bar=null", "callbacks.progress_log=null",
            "callbacks.lr_monitor=null", *overrides])
        dm, module, trainer = build(cfg)
        trainer.fit(module, datamodule=dm)
    meter = throughput(trainer)
    tokens_per_step = batch_size * module.model.config.block_size
    return {"step_s": tokens_per_step / meter.tokens_per_sec, "tokens_per_sec": meter.tokens_per_sec,
            "precision": trainer.precision}
