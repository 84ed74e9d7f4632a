"""Sweeps: the conf/sweep presets, a failing job in a multirun, the Optuna search, and the summary command."""

import csv
import json
import subprocess
import sys

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_wandb import SWEEP_TINY, explain, multirun, read_offline_run


def sweeper_config(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return compose("train", overrides=list(overrides), return_hydra_config=True).hydra.sweeper


def test_grid_preset_sweeps_size_optimizer_and_precision():
    assert dict(sweeper_config("+sweep=size").params) == {"model": "gpt_nano,gpt_micro"}
    grid = sweeper_config("+sweep=grid")
    assert grid._target_.endswith("BasicSweeper")
    assert dict(grid.params) == {"model": "gpt_nano,gpt_micro", "optimizer": "adamw,muon",
                                 "trainer.precision": "32,bf16-mixed"}


def test_optuna_preset_searches_lr_weight_decay_dropout_and_warmup():
    optuna = sweeper_config("+sweep=optuna")
    assert optuna._target_.endswith("OptunaSweeper") and optuna.direction == "minimize"
    assert optuna.sampler._target_ == "optuna.samplers.TPESampler"
    assert set(optuna.params) == {"optimizer.lr", "optimizer.weight_decay", "model.dropout",
                                  "scheduler.warmup_steps"}


def summary_command(sweep_dir, *args):
    return subprocess.run([sys.executable, "-m", "gptlab.apps.sweep", f"dir={sweep_dir}", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_summary_command_rejects_a_missing_directory(tmp_path):
    proc = summary_command(tmp_path / "nope")
    assert proc.returncode == 2 and "no such sweep directory" in proc.stderr


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory, token_cache_dir):
    """Two jobs: the first fails once training has started (a NaN loss at step 2: the NaN guard stops it), after
    its W&B run has begun. Both watch gradients."""
    sweep_dir = tmp_path_factory.mktemp("failing") / "sweep"
    proc = multirun(sweep_dir, "callbacks.nan_guard.inject_at_step=2,null", *SWEEP_TINY, "logger=wandb",
                    "logger.wandb.watch=gradients", "logger.wandb.watch_log_freq=1", cache_dir=token_cache_dir)
    return sweep_dir, proc


@pytest.mark.full
def test_failed_job_is_listed_its_wandb_run_finished_and_the_sweep_exits_nonzero(failing_sweep):
    sweep_dir, proc = failing_sweep
    assert proc.returncode == 1, explain(proc)
    assert "1 of 2 jobs failed: 0" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr  # the failed job: one line, the table says the rest
    assert "job failed: callbacks.nan_guard.inject_at_step=2" in proc.stdout + proc.stderr
    table = proc.stdout[proc.stdout.index("sweep summary"):]
    assert "failed (NonFiniteLossError: training loss is NaN or Inf at step 2" in table
    assert "completed" in table
    assert f"  job 0: {sweep_dir / '0' / 'train.log'}" in table.splitlines()  # where the failed job's story is
    assert read_offline_run(sweep_dir / "0")["exit_code"] == 1
    done = read_offline_run(sweep_dir / "1")
    assert done["exit_code"] == 0 and any("test/ppl" in row for row in done["history"])


@pytest.mark.full
def test_watch_logs_gradient_histograms_of_the_gpt(failing_sweep):
    sweep_dir, _ = failing_sweep
    history = read_offline_run(sweep_dir / "1")["history"]
    assert any(k.startswith("gradients/transformer.h.0.") for row in history for k in row)


def last_logged(metrics_csv, key):
    return [float(r[key]) for r in csv.DictReader(open(metrics_csv)) if r.get(key)][-1]


@pytest.mark.full
def test_summary_command_table_matches_the_jobs_metrics_files(failing_sweep, tmp_path):
    sweep_dir, _ = failing_sweep
    proc = summary_command(sweep_dir, f"csv={tmp_path / 'table.csv'}")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "table.csv")))
    assert [(r["job"], r["status"]) for r in rows] == [("0", "failed"), ("1", "completed")]
    assert rows[0]["overrides"].startswith("callbacks.nan_guard.inject_at_step=2") and rows[0]["val_ppl"] == ""
    done = rows[1]
    metrics = sweep_dir / "1" / "csv" / "metrics.csv"  # Lightning's CSVLogger, independent of result.json
    assert float(done["val_ppl"]) == pytest.approx(last_logged(metrics, "val/ppl"))
    assert float(done["test_ppl"]) == pytest.approx(last_logged(metrics, "test/ppl"))
    result = json.loads((sweep_dir / "1" / "result.json").read_text())
    assert float(done["tokens_per_sec"]) == pytest.approx(result["perf/tokens_per_sec"]) and result["steps"] == 4
    printed = proc.stdout.splitlines()
    line = next(x for x in printed if x.startswith("1 "))
    assert f"{float(done['val_ppl']):.2f}" in line and f"{float(done['test_ppl']):.2f}" in line
    assert "callbacks.nan_guard.inject_at_step=null" in line and line.rstrip().endswith("completed")


@pytest.mark.full
def test_optuna_sweep_of_three_trials_reports_the_best_value_and_parameters(tmp_path, token_cache_dir):
    sweep_dir = tmp_path / "sweep"
    proc = multirun(sweep_dir, "+sweep=optuna", "hydra.sweeper.n_trials=3", *SWEEP_TINY, "logger=csv",
                    cache_dir=token_cache_dir)
    assert proc.returncode == 0, explain(proc)
    best = OmegaConf.to_container(OmegaConf.load(sweep_dir / "optimization_results.yaml"))
    results = [json.loads((sweep_dir / str(i) / "result.json").read_text()) for i in range(3)]
    assert all(r["status"] == "completed" for r in results)
    assert best["best_value"] == pytest.approx(min(r["val/ppl"] for r in results))
    params = best["best_params"]
    assert set(params) == {"optimizer.lr", "optimizer.weight_decay", "model.dropout", "scheduler.warmup_steps"}
    assert 1e-4 <= params["optimizer.lr"] <= 3e-2 and 0 <= params["model.dropout"] <= 0.3
    winner = min(results, key=lambda r: r["val/ppl"])
    assert f"optimizer.lr={params['optimizer.lr']}" in winner["overrides"]
    assert f"Best value: {best['best_value']}" in proc.stdout + proc.stderr
    assert "3 jobs, 3 completed, 0 failed" in proc.stdout



@pytest.mark.full
def test_optuna_study_whose_every_trial_fails_ends_with_the_table_and_one_line(tmp_path, token_cache_dir):
    sweep_dir = tmp_path / "sweep"
    proc = multirun(sweep_dir, "+sweep=optuna", "hydra.sweeper.n_trials=2", *SWEEP_TINY, "logger=csv",
                    "callbacks.nan_guard.inject_at_step=2", cache_dir=token_cache_dir)
    assert proc.returncode == 1, explain(proc)
    assert "Traceback" not in proc.stdout + proc.stderr and "No trials are completed" not in proc.stderr
    assert "2 jobs, 0 completed, 2 failed or without a result" in proc.stdout
    assert proc.stderr.rstrip().endswith("2 of 2 jobs failed: 0, 1")
