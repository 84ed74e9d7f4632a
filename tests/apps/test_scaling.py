"""Scaling laws: the fit recovers a known law (exponents, IsoFLOP minima, the compute-optimal size); the command on
a sweep's results, with a held-out run, and its refusals; `train_flops` trains its budget; the IsoFLOP preset end
to end (full suite)."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, TINY, run_train
from scipy.optimize import check_grad, minimize_scalar
from test_sweep import sweeper_config
from test_wandb import explain, multirun

from gptlab.apps.results.result import write_result
from gptlab.apps.results.scaling import GRID, Point, _objective, fit_loss, predict, scaling_fit

LAW = {"E": 1.7, "A": 400.0, "alpha": 0.34, "B": 410.0, "beta": 0.28}  # Chinchilla's fit, roughly
A_TRUE = LAW["beta"] / (LAW["alpha"] + LAW["beta"])
BUDGETS = (1e17, 1e18, 1e19)


def optimum(flops):
    """The N that minimises the law at `flops` = 6ND (the closed form of Chinchilla's appendix, computed)."""
    res = minimize_scalar(lambda x: predict(LAW, math.exp(x), flops / (6 * math.exp(x))), bounds=(10, 30),
                          method="bounded", options={"xatol": 1e-8})
    return math.exp(res.x)


SIZES = np.geomspace(1e7, 1e9, 7)


def law_points(noise=0.005, seed=0, sizes=SIZES, budgets=BUDGETS):
    """An IsoFLOP grid under LAW with FLOPs 6ND, each loss off by a relative `noise` (as a run's seed moves it)."""
    rng = np.random.default_rng(seed)
    return [Point(f"{c:g}/{n:g}", n, c / (6 * n), c, c,
                  float(predict(LAW, n, c / (6 * n))) * math.exp(rng.normal(0, noise)))
            for c in budgets for n in sizes]


def test_the_fit_recovers_a_known_law_its_exponents_and_the_compute_optimal_size():
    report = scaling_fit(law_points(), 1e21, bootstrap=30, seed=0)
    fit = report["numbers"]
    assert fit["alpha"] == pytest.approx(LAW["alpha"], abs=0.03) and fit["beta"] == pytest.approx(LAW["beta"],
                                                                                                 abs=0.02)
    assert fit["a"] == pytest.approx(A_TRUE, abs=0.02) and fit["isoflop_a"] == pytest.approx(A_TRUE, abs=0.03)
    assert fit["n_opt"] == pytest.approx(optimum(1e21), rel=0.15)
    assert fit["isoflop_n_opt"] == pytest.approx(optimum(1e21), rel=0.25)
    assert fit["d_opt"] == pytest.approx(1e21 / (6 * fit["n_opt"]), rel=1e-6)  # FLOPs a token fitted: 6 N
    assert report["flops_law"] == pytest.approx((6.0, 1.0), rel=1e-6)
    for m in report["minima"]:  # each budget's parabola finds that budget's optimum, within the grid's spacing
        assert m["bracketed"] and m["n_opt"] == pytest.approx(optimum(m["budget"]), rel=0.3)
    spread = report["bootstrap"]
    assert spread["a"]["p5"] < A_TRUE < spread["a"]["p95"] and 0 < spread["a"]["std"] < 0.05
    assert spread["alpha"]["resamples"] == 30


def test_the_objectives_gradient_is_its_derivative_and_the_grid_starts_in_the_fits_parameter_order():
    points = law_points(noise=0.02)
    args = tuple(np.log([getattr(p, k) for p in points]) for k in ("n", "d", "loss"))
    for theta in ([6.0, 0.34, 6.0, 0.28, 0.5], [1.0, 0.9, 12.0, 0.1, 0.0], GRID[7]):
        theta = np.array(theta, float)
        error = check_grad(lambda t: _objective(t, *args)[0], lambda t: _objective(t, *args)[1], theta)
        assert error < 1e-4 * np.linalg.norm(_objective(theta, *args)[1]), (theta, error)  # finite differences
    log_a, alpha, log_b, beta, log_e = GRID.T  # the fit's order: exponents 0.2-1, log coefficients 0-15
    assert set(alpha) == set(beta) == {0.2, 0.5, 1.0} and set(log_a) == set(log_b) == {0.0, 5.0, 15.0}
    assert set(log_e) == {0.0, 0.75, 1.5}
    one_start = fit_loss(*(np.array([getattr(p, k) for p in law_points(noise=0.0)]) for k in ("n", "d", "loss")),
                         starts=GRID[:1])  # from the grid's first point alone: found all the same
    assert one_start["beta"] == pytest.approx(LAW["beta"], rel=1e-3)


def test_a_run_cut_short_is_left_out_of_its_isoflop_profile_but_not_out_of_the_fit():
    points = law_points()
    cut = points[3]
    points[3] = Point(cut.job, cut.n, cut.d / 2, cut.c / 2, cut.budget, float(predict(LAW, cut.n, cut.d / 2)))
    report = scaling_fit(points, 1e21, bootstrap=0)
    assert report["runs"] == 21 and report["numbers"]["a"] == pytest.approx(A_TRUE, abs=0.02)
    assert [m["runs"] for m in report["minima"]] == [6, 7, 7]
    assert report["minima"][0]["n_opt"] == pytest.approx(optimum(BUDGETS[0]), rel=0.3)


def test_without_noise_the_fit_is_exact_and_without_a_bracketed_minimum_there_is_no_isoflop_exponent():
    fit = scaling_fit(law_points(noise=0.0), 1e21, bootstrap=0)["numbers"]
    assert fit["alpha"] == pytest.approx(LAW["alpha"], rel=1e-3) and fit["E"] == pytest.approx(LAW["E"], rel=1e-3)
    small = law_points(sizes=np.geomspace(1e5, 1e6, 4))  # far smaller than every budget's optimum
    report = scaling_fit(small, 1e21, bootstrap=0)
    assert not any(m["bracketed"] for m in report["minima"]) and report["numbers"]["isoflop_a"] is None


def scaling_command(*args):
    return subprocess.run([sys.executable, "-m", "gptlab.apps.scaling", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def write_sweep(sweep_dir, points):
    """Job directories as train.py leaves them: result.json with the numbers a fit reads."""
    for i, p in enumerate(points):
        write_result(sweep_dir / str(i), "completed", {"val/loss": p.loss}, overrides=[f"train_flops={p.budget}"],
                     config={"train_flops": p.budget}, block_params=int(p.n), train_tokens=int(p.d),
                     flops_per_token=p.c / int(p.d))


def test_the_command_prints_the_fit_writes_it_and_its_figure_and_checks_a_held_out_run(tmp_path):
    sweep = tmp_path / "sweep"
    write_sweep(sweep, law_points())
    write_result(sweep / "21", "failed", overrides=["train_flops=1e18"], error="boom")  # left out
    held = tmp_path / "held_out"
    n, d = 3e8, 1e20 / (6 * 3e8)  # a budget and a size no job of the sweep ran
    write_result(held, "completed", {"val/loss": float(predict(LAW, n, d)) * 1.01}, block_params=int(n),
                 train_tokens=int(d), flops_per_token=6 * n)
    proc = scaling_command(f"dir={sweep}", "flops=1e21", f"held_out={held}", "bootstrap=20")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "scaling fit of 21 runs; ± bootstrap std [5 %, 95 %] over 20 resamples" in out
    assert "approach 3, L(N, D) = E + A / N^alpha + B / D^beta" in out and "train_flops=1e+18: N_opt" in out
    report = json.loads((sweep / "scaling.json").read_text())
    assert report["numbers"]["a"] == pytest.approx(A_TRUE, abs=0.02)
    held_out = report["held_out"]
    assert held_out["error"] == pytest.approx(0.01, abs=0.005)  # the fit predicts the law's loss within 0.5 %
    assert f"val loss {held_out['loss']:.3f}, the fit's {held_out['predicted']:.3f} ({held_out['error']:+.1%})" in out
    assert (sweep / "plots" / "scaling.png").stat().st_size > 10_000


def test_the_command_refuses_what_it_cannot_fit_in_one_line(tmp_path):
    old, empty = tmp_path / "old", tmp_path / "empty"
    empty.mkdir()
    write_result(old / "0", "completed", {"val/loss": 5.0}, params=100)  # before gptlab recorded N, D and C
    cases = [(tmp_path / "nope", "no such sweep directory"),
             (empty, "0 completed runs; a fit of L(N, D) needs at least 5"),
             (old, "has no block_params, train_tokens, flops_per_token (a run of an older gptlab")]
    for sweep, message in cases:
        proc = scaling_command(f"dir={sweep}")
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_the_isoflop_preset_sweeps_widths_and_budgets_without_a_time_budget():
    assert dict(sweeper_config("+sweep=scaling").params) == {"model.n_embd": "8,16,32,64,128,256",
                                                            "train_flops": "2e11,6e11,2e12"}


def test_train_flops_trains_the_steps_of_its_budget_counted_with_the_adaptive_heads_shares(tmp_path,
                                                                                         token_cache_dir):
    budget = 3e10
    run_train(tmp_path, *TINY, "model.head=adaptive", "model.tie_weights=false", f"train_flops={budget}",
              "run_time=null", "trainer.max_time=null", cache_dir=token_cache_dir)  # no time budget to end it sooner
    result = json.loads((tmp_path / "result.json").read_text())
    per_step = 4 * 128  # data.batch_size × block_size
    assert result["train_tokens"] == result["steps"] * per_step and result["steps"] != 6  # not trainer.max_steps
    trained = result["flops_per_token"] * result["train_tokens"]
    assert abs(trained - budget) <= 0.5 * result["flops_per_token"] * per_step  # the nearest whole step
    # the adaptive head counted with its clusters' shares of the training tokens, not every cluster in full
    from gptlab.model.gpt import GPT, GPTConfig

    config = {k: v for k, v in result["config"]["model"].items() if k != "_target_"}
    upper = GPT(GPTConfig(**config)).flops_per_token()
    assert result["flops_per_token"] < 0.9 * upper
    assert 0 < result["block_params"] < result["params"]


@pytest.mark.full
def test_an_isoflop_sweep_on_this_cpu_is_fitted_end_to_end(tmp_path, token_cache_dir):
    """The preset at a smaller scale still: 3 widths × 2 budgets of real runs, then the command on them."""
    proc = multirun(tmp_path, "+sweep=scaling", "model.n_embd=16,32,64", "train_flops=2e10,6e10",
                    "final_limit_batches=4", "trainer.limit_val_batches=0", "callbacks.sample_text=null",
                    cache_dir=token_cache_dir)
    assert proc.returncode == 0, explain(proc)
    results = [json.loads((tmp_path / str(i) / "result.json").read_text()) for i in range(6)]
    for r in results:
        flops = r["flops_per_token"] * r["train_tokens"]
        assert flops == pytest.approx(r["config"]["train_flops"], rel=0.1) and r["config"]["run_time"] is None
    proc = scaling_command(f"dir={tmp_path}", "bootstrap=10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "scaling.json").read_text())
    assert report["runs"] == 6 and len(report["minima"]) == 2
    assert "compute-optimal for flops=" in proc.stdout and (tmp_path / "plots" / "scaling.png").is_file()
