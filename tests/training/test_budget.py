"""A time budget (trainer.max_time) becomes a step budget once; the LR schedule then goes by steps, also after a
resume. Real Lightning Trainers on a tiny GPT and random tokens; the DDP case is in test_ddp.py."""

import time

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from gptlab.training.budget import TimeBudget, ValidateLastStep
from gptlab.training.module import GPTLitModule
from gptlab.training.schedulers import Cosine

LR, MIN_RATIO = 1e-3, 0.1


class Slow(L.Callback):
    """Makes each step take at least `seconds` more, and records the learning rate of every step."""

    def __init__(self, seconds=0.0):
        self.seconds, self.lrs = seconds, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        time.sleep(self.seconds)


def tiny_module():
    torch.manual_seed(0)
    return GPTLitModule(model={"vocab_size": 64, "block_size": 8, "n_layer": 1, "n_head": 1, "n_embd": 16},
                        optimizer=lambda groups: torch.optim.AdamW(groups, lr=LR),
                        scheduler=lambda opt: Cosine(total_steps=100_000, warmup_steps=3, min_lr_ratio=MIN_RATIO)(opt))


def loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 64, (4096, 9), generator=g)
    return DataLoader(TensorDataset(x[:, :-1], x[:, 1:]), batch_size=2, shuffle=False)


def fit(tmp_path, budget_seconds, slow=0.0, ckpt_path=None, deterministic=False, max_steps=100_000):
    budget = TimeBudget(max_time={"seconds": budget_seconds} if budget_seconds else None, skip_steps=2,
                        measure_steps=5, reserve=0.3)
    record = Slow(slow)
    every_10 = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=10, save_top_k=-1, filename="{step}")
    max_time = {"seconds": budget_seconds} if budget_seconds else None
    trainer = L.Trainer(accelerator="cpu", precision="32-true", max_steps=max_steps, max_time=max_time,
                        callbacks=[budget, record, every_10], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, deterministic=deterministic)
    trainer.fit(tiny_module(), train_dataloaders=loader(), ckpt_path=ckpt_path)
    return trainer, budget, record


def test_time_budget_becomes_the_step_count_where_training_and_the_lr_decay_end(tmp_path):
    trainer, budget, record = fit(tmp_path, budget_seconds=3, slow=0.02)
    assert budget.total_steps is not None and 20 < budget.total_steps < 150  # ~3 s × 0.7 of 20-ms steps
    assert trainer.global_step == budget.total_steps  # the step budget ended it, not the clock
    last = record.lrs[budget.total_steps - 1]
    assert MIN_RATIO * LR <= last < 1.01 * MIN_RATIO * LR  # fully decayed at the last step
    assert record.lrs[budget.total_steps // 2] == pytest.approx(LR * (MIN_RATIO + (1 - MIN_RATIO) / 2), rel=0.1)


def test_a_resumed_run_follows_the_schedule_it_started_with(tmp_path):
    first, budget, record = fit(tmp_path / "a", budget_seconds=3, slow=0.02)
    ckpt = tmp_path / "a" / "step=20.ckpt"
    # resumed on a faster "machine": measuring again would give it more steps; it keeps the stored count
    resumed, budget2, record2 = fit(tmp_path / "b", budget_seconds=3, slow=0.0, ckpt_path=ckpt)
    assert budget2.total_steps == budget.total_steps and resumed.global_step == first.global_step
    assert {s: lr for s, lr in record2.lrs.items()} == {s: lr for s, lr in record.lrs.items() if s >= 20}


def test_resumed_without_the_budget_the_schedule_goes_back_to_max_steps(tmp_path):
    first, budget, _ = fit(tmp_path / "a", budget_seconds=3, slow=0.02)
    resumed, budget2, record2 = fit(tmp_path / "b", budget_seconds=None, ckpt_path=tmp_path / "a" / "step=20.ckpt",
                                    max_steps=budget.total_steps + 15)
    schedule = resumed.lr_scheduler_configs[0].scheduler.lr_lambdas[0]
    assert budget2.total_steps is None and schedule.total_steps == resumed.global_step == budget.total_steps + 15


def test_deterministic_runs_schedule_by_max_steps_alone(tmp_path):
    trainer, budget, record = fit(tmp_path, budget_seconds=60, deterministic=True, max_steps=30)
    assert budget.total_steps is None and trainer.global_step == 30
    assert record.lrs[29] > 0.99 * LR  # 30 of 100,000 steps: no decay yet


class Validations(L.Callback):
    def __init__(self):
        self.steps = []

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.steps.append(trainer.global_step)


@pytest.mark.parametrize("last", [True, False])
def test_the_last_step_is_validated_where_no_val_check_interval_falls_on_it(last, tmp_path):
    val = DataLoader(TensorDataset(*loader().dataset[:8]), batch_size=4)
    seen = Validations()
    callbacks = [seen, ValidateLastStep()] if last else [seen]
    trainer = L.Trainer(accelerator="cpu", precision="32-true", max_steps=7, val_check_interval=5,
                        callbacks=callbacks, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(tiny_module(), train_dataloaders=loader(), val_dataloaders=val)
    assert trainer.global_step == 7
    assert seen.steps == ([5, 7] if last else [5])  # without it, steps 6 and 7 are never scored
