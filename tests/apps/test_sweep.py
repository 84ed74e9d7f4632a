"""Sweeps: the conf/sweep presets, a failing job in a multirun, the Optuna search, and the summary command."""

import csv
import json
import statistics
import subprocess
import sys

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_wandb import SWEEP_TINY, explain, multirun, read_offline_run

from gptlab.apps.results.figures import sweep_figure
from gptlab.apps.results.runs import load_runs
from gptlab.apps.results.table import by_configuration, format_by_configuration
from gptlab.config.run import configuration


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


def test_jobs_of_one_configuration_are_aggregated_over_their_seeds():
    rows = [{"job": str(i), "overrides": f"seed={s} model={m}", "val_ppl": v, "test_ppl": v + 1,
             "tokens_per_sec": 100.0, "status": "completed"}
            for i, (s, m, v) in enumerate([(1, "a", 10.0), (2, "a", 12.0), (3, "a", 14.0), (1, "b", 20.0)])]
    rows.append({**rows[-1], "job": "4", "overrides": "seed=2 model=b", "status": "failed", "val_ppl": None})
    groups = by_configuration(rows)
    assert [(g["configuration"], g["seeds"], g["jobs"]) for g in groups] == [("model=a", 3, "0 1 2"),
                                                                            ("model=b", 1, "3")]
    assert groups[0]["val_ppl_mean"] == 12.0 and groups[0]["val_ppl_std"] == 2.0  # sample std
    assert groups[1]["val_ppl_std"] is None  # one seed completed: no spread to show
    lines = format_by_configuration(groups).splitlines()
    assert lines[2].split() == ["model=a", "3", "12.00", "±", "2.00", "13.00", "±", "2.00", "100", "±", "0"]
    assert lines[3].split() == ["model=b", "1", "20.00", "21.00", "100"]
    assert by_configuration(rows[:1] + rows[3:4]) == []  # no configuration repeated: nothing to aggregate
    assert configuration(["seed=3", "+seed=4", "model=a", "data.seed=5"]) == ["model=a", "data.seed=5"]


@pytest.mark.full
def test_a_multirun_over_seeds_prints_one_row_per_configuration_with_mean_and_std(tmp_path, token_cache_dir):
    """The issue's command: `-m seed=1,2,3 model=gpt_nano,gpt_micro debug=tiny`, shortened further (2 steps), with
    W&B offline: two configurations of three seeds each, in the table, in summary_by_configuration.csv and as
    two W&B groups."""
    proc = multirun(tmp_path, "seed=1,2,3", "model=gpt_nano,gpt_micro", "debug=tiny", "trainer.max_steps=2",
                    "trainer.limit_val_batches=0", "final_limit_batches=1", "logger=wandb", cache_dir=token_cache_dir)
    assert proc.returncode == 0, explain(proc)
    table = proc.stdout[proc.stdout.index("mean ± std over seeds"):]
    rows = [line.split() for line in table.splitlines()[2:4]]
    assert [r[:2] for r in rows] == [["model=gpt_nano", "3"], ["model=gpt_micro", "3"]] and all("±" in r for r in rows)
    saved = list(csv.DictReader(open(tmp_path / "summary_by_configuration.csv")))
    jobs = {r["job"]: r for r in csv.DictReader(open(tmp_path / "summary.csv"))}
    for group in saved:
        vals = [float(jobs[j]["val_ppl"]) for j in group["jobs"].split()]
        assert float(group["val_ppl_mean"]) == pytest.approx(sum(vals) / 3)
        assert float(group["val_ppl_std"]) == pytest.approx(statistics.stdev(vals)) and len(set(vals)) == 3
    figure = sweep_figure(load_runs(tmp_path))  # as in <sweep>/plots/sweep.png: a bar per configuration, ± std
    bars = figure.axes[1]
    assert [t.get_text() for t in bars.get_yticklabels()] == sorted(
        [f"model={m} (3 seeds)" for m in ("gpt_nano", "gpt_micro")],
        key=lambda name: float(next(g["val_ppl_mean"] for g in saved if name.split()[0] in g["configuration"])))
    errorbars = [c for c in bars.containers if type(c).__name__ == "ErrorbarContainer"]
    assert len(bars.patches) == 2 and len(errorbars[0].lines[2][0].get_segments()) == 2  # ± std on both
    assert (tmp_path / "plots" / "sweep.png").is_file()
    groups = {read_offline_run(tmp_path / j)["group"] for j in jobs}  # the sweep and the configuration
    assert groups == {f"{tmp_path.name} model=gpt_nano", f"{tmp_path.name} model=gpt_micro"}
