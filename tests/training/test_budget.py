"""A time budget becomes the step where training and the learning-rate decay end, re-planned as the machine speeds up
or slows down, kept across a resume; the throughput, the progress bar and the progress log follow it. Real
Lightning Trainers on a tiny GPT and random tokens, timed by a fake clock that each step advances by what the
simulated machine takes: nothing here depends on how fast this machine is.
The DDP case is in test_ddp.py."""

import re

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from gptlab.training.budget import TimeBudget, ValidateLastStep, steps_that_fit
from gptlab.training.callbacks import ProgressLog, StepProgress, Throughput
from gptlab.training.module import GPTLitModule
from gptlab.training.schedulers import WSD, Cosine

LR = 1e-3


class Machine(L.Callback):
    """A simulated machine: a clock that each training step advances by `step_seconds(step)` and each validation
    by `val_seconds`; records the learning rate of every step."""

    def __init__(self, step_seconds, val_seconds=0.0):
        self.now, self.step_seconds, self.val_seconds, self.lrs = 1000.0, step_seconds, val_seconds, {}

    def clock(self):
        return self.now

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.now += self.step_seconds(trainer.global_step)

    def on_validation_end(self, trainer, pl_module):
        self.now += self.val_seconds


def fully_decayed(machine, trainer):
    """The last step is the last of the decay: its learning rate the lowest of the run, the schedule's next 0."""
    total = trainer.global_step
    fn = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0]
    return fn(total) == 0.0 and machine.lrs[total - 1] == min(machine.lrs.values()) < 0.1 * LR


def tiny_module(schedule="wsd", min_lr_ratio=0.0, decay_fraction=0.3):
    torch.manual_seed(0)
    make = (lambda opt: WSD(total_steps=100_000, warmup_steps=3, decay_fraction=decay_fraction,
                            min_lr_ratio=min_lr_ratio)(opt)
            ) if schedule == "wsd" else (lambda opt: Cosine(total_steps=100_000, warmup_steps=3,
                                                            min_lr_ratio=min_lr_ratio)(opt))
    return GPTLitModule(model={"vocab_size": 64, "block_size": 8, "n_layer": 1, "n_head": 1, "n_embd": 16},
                        optimizer=lambda groups: torch.optim.AdamW(groups, lr=LR), scheduler=make)


def loader(n=4096):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 64, (n, 9), generator=g)
    return DataLoader(TensorDataset(x[:, :-1], x[:, 1:]), batch_size=2, shuffle=False)


def fit(tmp_path, machine, budget_seconds=30.0, schedule="wsd", ckpt_path=None, deterministic=False,
        max_steps=100_000, run_time=None, val_every=None, extra=(), progress_bar=False, decay_fraction=0.3,
        **budget):
    budget = TimeBudget(max_time={"seconds": budget_seconds} if budget_seconds else None,
                        run_time={"seconds": run_time} if run_time else None, final_batches=1.0,
                        skip_steps=2, measure_steps=5, reserve=0.02, clock=machine.clock, started=machine.now,
                        **budget)
    every_10 = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=10, save_top_k=-1, filename="{step}")
    val = dict(val_dataloaders=DataLoader(TensorDataset(*loader(16).dataset[:8]), batch_size=4)) if val_every else {}
    trainer = L.Trainer(accelerator="cpu", precision="32-true", max_steps=max_steps,
                        callbacks=[machine, budget, every_10, ValidateLastStep(), *extra], logger=False,
                        enable_progress_bar=progress_bar, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=2 if val_every else 0, val_check_interval=val_every,
                        deterministic=deterministic, default_root_dir=tmp_path)
    trainer.fit(tiny_module(schedule, decay_fraction=decay_fraction), train_dataloaders=loader(),
                ckpt_path=ckpt_path, **val)
    return trainer, budget


def test_steps_that_fit_keep_back_the_validations_and_the_reserve():
    assert steps_that_fit(100.0, 0, 0.5, 0.0, None, 0.0) == 200
    assert steps_that_fit(100.0, 0, 0.5, 0.0, None, 0.1) == 180
    # a validation of 2 s every 10 steps (at 10, 20, ...) and one after the last: 140 steps + 14 validations
    assert steps_that_fit(100.0, 0, 0.5, 2.0, 10, 0.0) == 140
    # from step 5: 140 steps reach step 145, with validations at 10, ..., 140 and after 145: 70 + 30 = 100 s
    assert steps_that_fit(100.0, 5, 0.5, 2.0, 10, 0.0) == 140
    assert steps_that_fit(1.0, 0, 5.0, 0.0, None, 0.0) == 0


@pytest.mark.parametrize("seconds", [0.1, 0.4])  # a fast machine and a slow one
def test_the_budget_becomes_the_step_where_training_and_the_decay_end(tmp_path, seconds):
    machine = Machine(lambda step: seconds)
    trainer, budget = fit(tmp_path, machine)
    expected = 30.0 * 0.98 / seconds  # the whole budget, less the reserve
    assert trainer.global_step == budget.total_steps == pytest.approx(expected, rel=0.05)
    assert machine.now - 1000.0 <= 30.0  # it ended within the budget
    assert fully_decayed(machine, trainer)  # the decay ends at the last step


def test_a_machine_that_slows_down_half_way_still_ends_on_its_plan_fully_decayed(tmp_path):
    machine = Machine(lambda step: 0.1 if step < 100 else 0.2)  # twice as slow from step 100 (10 s in)
    trainer, budget = fit(tmp_path, machine)
    # 10 s at 0.1 s, then ~19.4 s at 0.2 s: ~197 steps, where the first plan (at full speed) said ~294
    assert trainer.global_step == budget.total_steps == pytest.approx(100 + 19.4 / 0.2, rel=0.05)
    assert machine.now - 1000.0 <= 30.0
    assert fully_decayed(machine, trainer)
    lrs = [machine.lrs[s] for s in sorted(machine.lrs)]
    assert all(b <= a + 1e-12 for a, b in zip(lrs[3:], lrs[4:], strict=False))  # no jump up after the warmup


@pytest.mark.parametrize(("slow_from", "slower"), [(150, 2), (250, 2), (150, 10)])
def test_a_machine_that_slows_down_during_the_decay_bends_it_to_the_new_end(tmp_path, slow_from, slower):
    """decay_fraction 0.5 (the default run's): the decay under way goes on from the learning rate it has reached,
    straight to the new end, which comes earlier than the first plan's ~294. Slowed down at step 150 (as the decay
    begins) or 250 (deep into it), 2 or 10 times (two busy processes on a 2-core machine make torch's steps ~9
    times slower): a measurement lasts at most 2% of the budget, so the plan follows within a second or so."""
    machine = Machine(lambda step: 0.1 if step < slow_from else 0.1 * slower)
    trainer, budget = fit(tmp_path, machine, decay_fraction=0.5)
    assert trainer.global_step == budget.total_steps == pytest.approx(
        slow_from + (29.4 - slow_from / 10) / (0.1 * slower), rel=0.03)
    assert machine.now - 1000.0 <= 30.0 + 0.1 * slower  # within a step of the deadline
    assert fully_decayed(machine, trainer)
    lrs = [machine.lrs[s] for s in sorted(machine.lrs)]
    assert all(b <= a + 1e-12 for a, b in zip(lrs[3:], lrs[4:], strict=False))  # no jump up after the warmup


def test_a_machine_that_speeds_up_uses_the_time_it_gains(tmp_path):
    machine = Machine(lambda step: 0.2 if step < 50 else 0.1)
    trainer, budget = fit(tmp_path, machine)
    assert trainer.global_step == budget.total_steps == pytest.approx(50 + (29.4 - 10.0) / 0.1, rel=0.05)
    assert 29.0 <= machine.now - 1000.0 <= 30.0  # the whole budget used


def test_validations_and_the_final_scores_are_kept_back(tmp_path):
    machine = Machine(lambda step: 0.1, val_seconds=2.0)
    trainer, budget = fit(tmp_path, machine, budget_seconds=None, run_time=40.0, val_every=20)
    # each validation: 2 s for 2 batches; the final validation and test: 2 × 2 batches (the 8-window split):
    # 4 s kept back from run_time; 40 s = steps × 0.1 + validations (every 20 steps and after the last) × 2 s + 4 s
    assert budget.final_seconds(trainer) == pytest.approx(4.0)
    assert machine.now - 1000.0 + 4.0 <= 40.0
    assert machine.now - 1000.0 + 4.0 >= 40.0 * 0.95


def test_cosine_is_planned_once_as_its_decay_begins_after_the_warmup(tmp_path):
    machine = Machine(lambda step: 0.1 if step < 100 else 0.2)
    trainer, budget = fit(tmp_path, machine, schedule="cosine")
    assert budget.fixed and trainer.global_step == pytest.approx(294, rel=0.05)  # the first plan, at full speed


def test_a_resumed_run_goes_on_with_its_plan_and_the_time_it_has_left(tmp_path):
    fit(tmp_path / "a", Machine(lambda step: 0.1))  # a ~294-step plan; its checkpoint at step 100 is 10 s in
    second = Machine(lambda step: 0.2)  # resumed from there on a machine twice as slow
    trainer, budget = fit(tmp_path / "b", second, ckpt_path=tmp_path / "a" / "step=100.ckpt")
    assert budget.trained == pytest.approx(10.0 + (second.now - 1000.0), abs=0.5)
    assert trainer.global_step == budget.total_steps == pytest.approx(100 + (29.4 - 10.0) / 0.2, rel=0.05)
    assert fully_decayed(second, trainer)


def test_a_resumed_run_under_another_budget_goes_back_to_max_steps(tmp_path):
    fit(tmp_path / "a", Machine(lambda step: 0.1), max_steps=30)
    trainer, budget = fit(tmp_path / "b", Machine(lambda step: 0.1), budget_seconds=None, max_steps=50,
                          ckpt_path=tmp_path / "a" / "step=30.ckpt")
    assert trainer.global_step == 50 and budget.total_steps is None


def test_deterministic_runs_ignore_the_budget(tmp_path):
    trainer, budget = fit(tmp_path, Machine(lambda step: 0.1), deterministic=True, max_steps=40)
    assert budget.total_steps is None and trainer.global_step == 40


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


def test_throughput_leaves_validations_out_and_the_log_says_when_training_ends(tmp_path):
    machine = Machine(lambda step: 0.1, val_seconds=2.0)
    meter = Throughput(window=5, skip=2, peak_flops=1e6, cache_dir=None, clock=machine.clock)
    progress = ProgressLog(clock=machine.clock)
    trainer, budget = fit(tmp_path, machine, budget_seconds=None, run_time=40.0, val_every=20, extra=[meter, progress])
    tokens_per_step = 2 * 8  # batch 2, block 8
    assert meter.tokens_per_sec == pytest.approx(tokens_per_step / 0.1)  # the 2-s validations left out
    assert meter.rate == pytest.approx(tokens_per_step / 0.1)
    assert meter.mfu == pytest.approx(trainer.lightning_module.model.flops_per_token() * 160 / 1e6)
    trained = machine.now - 1000.0
    clock = r"(\d+):(\d\d):(\d\d)"
    lines = [re.fullmatch(rf"step (\d+)/(\d+) · val ppl [\d.]+ · 160 tokens/s · {clock} in · training ends in ~{clock}",
                          line) for line in progress.lines]
    assert all(lines) and len(lines) == trainer.global_step // 20 + (trainer.global_step % 20 != 0)
    assert int(lines[-1][1]) == int(lines[-1][2]) == budget.total_steps == trainer.global_step
    elapsed, left = ([int(h) * 3600 + int(m) * 60 + int(s) for h, m, s in (line.groups()[i:i + 3] for line in lines)]
                     for i in (2, 5))
    assert left[-1] == 0
    for a, b in zip(elapsed[1:], left[1:], strict=True):  # after the first timed validation: elapsed + time left
        assert a + b == pytest.approx(trained, abs=1.5)  # is the training's whole time

class BarTotals(L.Callback):
    def __init__(self, bar):
        self.bar, self.seen = bar, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        task = self.bar.progress.tasks[self.bar.train_progress_bar_id]
        self.seen.append((trainer.global_step, task.completed, task.total))


def test_the_progress_bar_counts_steps_up_to_the_planned_last_one(tmp_path):
    machine = Machine(lambda step: 0.1 if step < 100 else 0.2)
    bar = StepProgress()
    totals = BarTotals(bar)
    trainer, budget = fit(tmp_path, machine, extra=[bar, totals], progress_bar=True)
    assert all(completed == step for step, completed, _ in totals.seen)
    assert totals.seen[-1][2] == budget.total_steps == trainer.global_step  # the bar ends full
    assert totals.seen[30][2] > budget.total_steps  # the first plan, at full speed, was longer: the total moved
    assert "Epoch" not in bar._get_train_description(0)
