"""Scaling laws fitted to a sweep's runs (an IsoFLOP sweep: conf/sweep/scaling.yaml), for
`python -m gptlab.apps.scaling dir=<multirun directory>`.

Each completed job is a point, read from its result.json: N, its blocks' parameters (`block_params`: the
non-embedding count of Kaplan et al. 2020; at small widths a 50k-token embedding and output layer would swamp a
total count), D, the tokens it trained (`train_tokens`), its compute C = `flops_per_token` × D (the model's own
count, output layer and attention included), its budget (the `train_flops` it was given: its IsoFLOP group) and L,
its final validation loss (nats a token).

Two of Hoffmann et al. 2022's (Chinchilla's) fits:
- approach 3: L(N, D) = E + A / N^α + B / D^β, fitted by minimising the Huber loss (δ = 1e-3) of log L̂ - log L
  with L-BFGS from a grid of starting points. The compute-optimal size for a budget C minimises L(N, C / f(N)),
  where f, the FLOPs a token, is a power law of N fitted to the runs (6N at scale; at small widths the output
  layer's FLOPs dominate it). At scale, N_opt ∝ C^(β / (α + β)).
- approach 2: for each budget, a parabola of L in log N, whose vertex is the budget's optimal size (kept where the
  budget's sizes bracket it); log N_opt is a line in log C whose slope is the exponent a of N_opt ∝ C^a.
Uncertainty: both fits again on `bootstrap` resamples of the runs (drawn with replacement); each number's standard
deviation and 5-95 % interval over them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptlab.apps.results.result import read_result
from gptlab.apps.results.table import job_dirs
from gptlab.errors import GptlabError

HUBER_DELTA = 1e-3  # Chinchilla's: the fit follows the bulk of the runs, not an outlier
SCALING_FILE = "scaling.json"  # in the sweep directory: every fitted number, with its bootstrap spread
ON_BUDGET = 0.1  # a run in its budget's IsoFLOP profile: its compute within 10 % (whole steps; not cut short)
# approach 3's starting points (Chinchilla's grid, coarser), in the order of the fit's parameters: log A, α, log B,
# β, log E
GRID = np.array(np.meshgrid([0.0, 5.0, 15.0], [0.2, 0.5, 1.0], [0.0, 5.0, 15.0], [0.2, 0.5, 1.0], [0.0, 0.75, 1.5],
                            indexing="ij")).reshape(5, -1).T


@dataclass
class Point:
    job: str
    n: float  # the blocks' parameters
    d: float  # training tokens
    c: float  # training FLOPs
    budget: float | None  # train_flops, the IsoFLOP group
    loss: float  # final validation loss


def read_point(run_dir: Path, name: str) -> Point | None:
    """The point of a completed run, None for a failed one or one whose loss is not a number (it diverged); refused
    in one line when the run predates the numbers a fit needs."""
    result = read_result(run_dir)
    if result.get("status") != "completed":
        return None
    missing = [k for k in ("block_params", "train_tokens", "flops_per_token", "val/loss") if result.get(k) is None]
    if missing:
        raise GptlabError(f"{run_dir}: its result.json has no {', '.join(missing)} (a run of an older gptlab, or "
                          f"not trained): train it again to fit it")
    if not math.isfinite(float(result["val/loss"])):
        return None
    budget = (result.get("config") or {}).get("train_flops")
    return Point(name, float(result["block_params"]), float(result["train_tokens"]),
                 float(result["flops_per_token"]) * float(result["train_tokens"]),
                 float(budget) if budget is not None else None, float(result["val/loss"]))


def read_points(sweep_dir) -> list[Point]:
    d = Path(sweep_dir)
    if not d.is_dir():
        raise GptlabError(f"dir={sweep_dir}: no such sweep directory")
    points = [p for j in job_dirs(d) if (p := read_point(j, j.relative_to(d).as_posix())) is not None]
    if len({p.n for p in points}) < 2 or len({p.d for p in points}) < 2 or len(points) < 5:
        raise GptlabError(f"dir={sweep_dir}: {len(points)} completed runs; a fit of L(N, D) needs at least 5, of "
                          f"two sizes and two token counts or more (python train.py -m +sweep=scaling)")
    return points


# --- approach 3: L(N, D) = E + A / N^α + B / D^β


def _objective(theta, log_n, log_d, log_loss):
    """The mean Huber loss of the fit's log residuals (in units of δ², so that L-BFGS's tolerances apply), and its
    gradient. theta: log A, α, log B, β, log E."""
    a, alpha, b, beta, e = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    top = terms.max(axis=0)
    weights = np.exp(terms - top)
    total = weights.sum(axis=0)
    r = top + np.log(total) - log_loss
    weights /= total  # d log L̂ / d term
    small = np.abs(r) <= HUBER_DELTA
    value = np.where(small, 0.5 * r**2, HUBER_DELTA * (np.abs(r) - 0.5 * HUBER_DELTA)) / HUBER_DELTA**2
    slope = np.clip(r, -HUBER_DELTA, HUBER_DELTA) / HUBER_DELTA**2
    grad = np.array([weights[0], -weights[0] * log_n, weights[1], -weights[1] * log_d, weights[2]]) @ slope
    return value.mean(), grad / len(r)


def fit_loss(n, d, loss, starts=None) -> dict:
    """Approach 3 on arrays of N, D and L: {E, A, alpha, B, beta}, from the best of L-BFGS runs started at each
    row of `starts` (log A, α, log B, β, log E; default the grid)."""
    from scipy.optimize import minimize

    args = (np.log(n), np.log(d), np.log(loss))
    bounds = [(None, None), (0.0, 3.0), (None, None), (0.0, 3.0), (None, None)]
    best = None
    for start in GRID if starts is None else starts:
        res = minimize(_objective, start, args=args, jac=True, method="L-BFGS-B", bounds=bounds)
        if best is None or res.fun < best.fun:
            best = res
    a, alpha, b, beta, e = best.x
    return {"E": math.exp(e), "A": math.exp(a), "alpha": alpha, "B": math.exp(b), "beta": beta}


def predict(fit: dict, n, d):
    """L(N, D) of an approach-3 fit."""
    return fit["E"] + fit["A"] / np.power(n, fit["alpha"]) + fit["B"] / np.power(d, fit["beta"])


def flops_law(points: list[Point]) -> tuple[float, float]:
    """FLOPs a token as k · N^p, a line in log-log space through the runs: (k, p)."""
    log_n = np.log([p.n for p in points])
    log_f = np.log([p.c / p.d for p in points])
    p, log_k = np.polyfit(log_n, log_f, 1)
    return math.exp(log_k), p


def optimal_size(fit: dict, flops: float, law: tuple[float, float], n_range: tuple[float, float]) -> float | None:
    """The N that minimises L(N, C / f(N)) for the budget C = `flops`; None when it lies beyond 1000× the sweep's
    sizes either way (the fit says nothing there)."""
    from scipy.optimize import minimize_scalar

    k, p = law
    lo, hi = math.log(n_range[0]) - math.log(1000), math.log(n_range[1]) + math.log(1000)
    res = minimize_scalar(lambda x: predict(fit, math.exp(x), flops / (k * math.exp(x) ** p)), bounds=(lo, hi),
                          method="bounded")
    return math.exp(res.x) if lo + 1e-3 < res.x < hi - 1e-3 else None


# --- approach 2: IsoFLOP parabolas


def isoflop_minima(points: list[Point]) -> list[dict]:
    """Per budget of three sizes or more: the vertex of the parabola of L in log N, {budget, flops (the runs'
    geometric mean compute), runs, n_opt, loss, bracketed (the vertex lies within the budget's sizes), parabola (its
    coefficients, highest power first)}. A run that trained other than its budget (a time budget ended it) is
    left out of the profile; approach 3 still fits it, at its own N and D."""
    groups: dict[float, list[Point]] = {}
    for p in points:
        if p.budget is not None and abs(p.c / p.budget - 1) <= ON_BUDGET:
            groups.setdefault(p.budget, []).append(p)
    minima = []
    for budget, group in sorted(groups.items()):
        log_n = np.log([p.n for p in group])
        if len(set(log_n)) < 3:
            continue
        c2, c1, c0 = np.polyfit(log_n, [p.loss for p in group], 2)
        row = {"budget": budget, "runs": len(group), "flops": math.exp(np.mean(np.log([p.c for p in group]))),
               "n_opt": None,
               "loss": None, "bracketed": False, "parabola": [c2, c1, c0]}
        if c2 > 0:  # else no minimum: the loss only falls (or rises) with size at this budget
            x = -c1 / (2 * c2)
            row.update(n_opt=math.exp(x), loss=c0 - c1**2 / (4 * c2), bracketed=bool(log_n.min() <= x <= log_n.max()))
        minima.append(row)
    return minima


def isoflop_law(minima: list[dict]) -> tuple[float, float] | None:
    """N_opt = G · C^a through the bracketed minima (a line in log-log space): (G, a); None with fewer than two."""
    kept = [m for m in minima if m["bracketed"]]
    if len(kept) < 2:
        return None
    a, log_g = np.polyfit(np.log([m["flops"] for m in kept]), np.log([m["n_opt"] for m in kept]), 1)
    return math.exp(log_g), a


# --- both, with their bootstrap spread


def fit_all(points: list[Point], flops: float, starts=None) -> dict:
    """Every number the report shows, from one set of points."""
    n, d, loss = (np.array([getattr(p, k) for p in points]) for k in ("n", "d", "loss"))
    fit = fit_loss(n, d, loss, starts)
    law = flops_law(points)
    n_opt = optimal_size(fit, flops, law, (n.min(), n.max()))
    minima = isoflop_minima(points)
    iso = isoflop_law(minima)
    exponents = fit["alpha"] + fit["beta"]
    numbers = {**fit, "a": fit["beta"] / exponents if exponents > 0 else None, "n_opt": n_opt,
               "d_opt": flops / (law[0] * n_opt ** law[1]) if n_opt else None,
               "loss_opt": float(predict(fit, n_opt, flops / (law[0] * n_opt ** law[1]))) if n_opt else None,
               "isoflop_a": iso[1] if iso else None, "isoflop_g": iso[0] if iso else None,
               "isoflop_n_opt": iso[0] * flops ** iso[1] if iso else None}
    return {"numbers": numbers, "minima": minima, "flops_law": law}


def scaling_fit(points: list[Point], flops: float, bootstrap: int = 200, seed: int = 0) -> dict:
    """The fits of `points` and, for each number, its bootstrap std and 5-95 % interval over `bootstrap`
    resamples (each fitted from the full fit's optimum and two grid points, not the whole grid: 200 resamples
    take seconds)."""
    import scipy.optimize  # noqa: F401  (loads scipy's own BLAS, which the limit below must see)
    from threadpoolctl import threadpool_limits

    # BLAS on vectors of a few dozen numbers: its threads only wait for each other (20× slower on 2 busy cores)
    with threadpool_limits(1, "blas"):
        return _scaling_fit(points, flops, bootstrap, seed)


def _scaling_fit(points: list[Point], flops: float, bootstrap: int, seed: int) -> dict:
    full = fit_all(points, flops)
    f = full["numbers"]
    best = np.array([math.log(f["A"]), f["alpha"], math.log(f["B"]), f["beta"], math.log(f["E"])])
    starts = np.vstack([best, GRID[[0, len(GRID) // 2]]])
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {k: [] for k in f}
    for _ in range(bootstrap):
        resample = [points[i] for i in rng.integers(0, len(points), len(points))]
        if len({p.n for p in resample}) < 2 or len({p.d for p in resample}) < 2:
            continue
        for k, v in fit_all(resample, flops, starts)["numbers"].items():
            if v is not None and math.isfinite(v):  # (a resample may leave no bracketed minimum, for one)
                samples[k].append(v)
    spread = {k: {"std": float(np.std(v, ddof=1)), "p5": float(np.percentile(v, 5)),
                  "p95": float(np.percentile(v, 95)), "resamples": len(v)}
              for k, v in samples.items() if len(v) > 1}
    return {**full, "flops": flops, "runs": len(points), "resamples": bootstrap, "bootstrap": spread}


def held_out_check(fit: dict, run_dir) -> dict:
    """A run outside the sweep against the fit: its final val loss and L(N, D) at its N and D."""
    point = read_point(Path(run_dir), str(run_dir))
    if point is None:
        raise GptlabError(f"held_out={run_dir}: not a completed run (its result.json says otherwise, or is missing)")
    predicted = float(predict(fit, point.n, point.d))
    return {"dir": str(run_dir), "n": point.n, "d": point.d, "flops": point.c, "loss": point.loss,
            "predicted": predicted, "error": point.loss / predicted - 1}


def write_report(sweep_dir, report: dict) -> Path:
    path = Path(sweep_dir) / SCALING_FILE
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


# --- shown


def _pm(report: dict, key: str, fmt: str) -> str:
    value, spread = report["numbers"][key], report["bootstrap"].get(key)
    if value is None:
        return "-"
    text = format(value, fmt)
    if spread:
        text += f" ± {spread['std']:{fmt}} [{spread['p5']:{fmt}}, {spread['p95']:{fmt}}]"
        if spread["resamples"] < report["resamples"]:  # the others had no such number
            text += f" (of the {spread['resamples']} resamples that had one)"
    return text


def format_report(report: dict) -> str:
    """The fit as text: approach 3's law, approach 2's minima, the compute-optimal size and the held-out run."""
    n = report["numbers"]
    lines = [f"scaling fit of {report['runs']} runs; ± bootstrap std [5 %, 95 %] over {report['resamples']} "
             f"resamples of the runs",
             "approach 3, L(N, D) = E + A / N^alpha + B / D^beta (N: the blocks' parameters, D: training tokens, "
             "L: val loss in nats)",
             f"  E {_pm(report, 'E', '.3f')}   A {_pm(report, 'A', '.3g')}   alpha {_pm(report, 'alpha', '.3f')}   "
             f"B {_pm(report, 'B', '.3g')}   beta {_pm(report, 'beta', '.3f')}",
             f"  N_opt ∝ C^a, a = beta / (alpha + beta) = {_pm(report, 'a', '.3f')}",
             f"approach 2, IsoFLOP parabolas (L against log N at each budget; runs within {ON_BUDGET:.0%} of it):"]
    for m in report["minima"]:
        if m["n_opt"] is None:
            lines.append(f"  train_flops={m['budget']:.3g}: no minimum (the loss does not turn with size)")
        elif not m["bracketed"]:
            lines.append(f"  train_flops={m['budget']:.3g}: the parabola's vertex (N {m['n_opt']:.3g}) lies outside "
                         f"this budget's sizes: left out of the line")
        else:
            lines.append(f"  train_flops={m['budget']:.3g}: N_opt {m['n_opt']:,.0f}, val loss {m['loss']:.3f}")
    lines.append(f"  N_opt ∝ C^a, a = {_pm(report, 'isoflop_a', '.3f')}" if n["isoflop_a"] is not None else
                 "  no exponent: fewer than two budgets whose sizes bracket their minimum")
    k, p = report["flops_law"]
    lines.append(f"compute-optimal for flops={report['flops']:.3g} (FLOPs a token ≈ {k:.3g} · N^{p:.3f}, from the "
                 f"runs):")
    if n["n_opt"] is None:
        lines.append("  approach 3: beyond 1000× the sweep's sizes (the fit says nothing there)")
    else:
        lines.append(f"  approach 3: N {_pm(report, 'n_opt', ',.0f')} blocks' parameters, D {n['d_opt']:,.0f} "
                     f"tokens, predicted val loss {n['loss_opt']:.3f}")
    if n["isoflop_n_opt"] is not None:
        lines.append(f"  approach 2: N {_pm(report, 'isoflop_n_opt', ',.0f')}")
    held = report.get("held_out")
    if held:
        lines.append(f"held-out run {held['dir']}: N {held['n']:,.0f}, D {held['d']:,.0f}, C {held['flops']:.3g}: "
                     f"val loss {held['loss']:.3f}, the fit's {held['predicted']:.3f} ({held['error']:+.1%})")
    return "\n".join(lines)


def scaling_figure(points: list[Point], report: dict):
    """Left: val loss against N at each budget, with its parabola and approach 3's IsoFLOP curve; right: the
    optimal N against compute, both approaches, and the budget asked about."""
    from gptlab.apps.results.figures import pyplot

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5), layout="constrained")
    fig.suptitle(f"scaling fit of {report['runs']} runs", fontsize=13)
    n_fit, law = report["numbers"], report["flops_law"]
    budgets = sorted({p.budget for p in points if p.budget is not None})
    for i, budget in enumerate(budgets):
        group = [p for p in points if p.budget == budget]
        colour = f"C{i % 10}"
        left.plot([p.n for p in group], [p.loss for p in group], "o", color=colour, label=f"{budget:.3g} FLOPs")
        xs = np.geomspace(min(p.n for p in group) / 1.5, max(p.n for p in group) * 1.5, 100)
        c = budget  # approach 3's profile at the budget
        left.plot(xs, predict(n_fit, xs, c / (law[0] * xs ** law[1])), "--", color=colour, lw=1)
        m = next((m for m in report["minima"] if m["budget"] == budget), None)
        if m:
            left.plot(xs, np.polyval(m["parabola"], np.log(xs)), "-", color=colour, lw=1, alpha=0.6)
            if m["n_opt"]:  # hollow: outside the budget's sizes, left out of approach 2's line
                left.plot([m["n_opt"]], [m["loss"]], "*", color=colour, ms=12, mec="black",
                          mfc=colour if m["bracketed"] else "none")
    left.set(xscale="log", xlabel="N (the blocks' parameters)", ylabel="final val loss (nats/token)",
             title="IsoFLOP profiles: parabolas (solid, ★ minima; hollow: outside the sizes), approach 3 (dashed)")
    left.legend(fontsize=9)
    kept = [m for m in report["minima"] if m["bracketed"]]
    right.plot([m["flops"] for m in kept], [m["n_opt"] for m in kept], "*", ms=12, color="C1",
               label="approach 2: IsoFLOP minima")
    lo = min([p.c for p in points] + [report["flops"]]) / 2
    cs = np.geomspace(lo, max([p.c for p in points] + [report["flops"]]) * 2, 30)
    if n_fit["isoflop_a"] is not None:
        right.plot(cs, n_fit["isoflop_g"] * cs ** n_fit["isoflop_a"], "-", color="C1",
                   label=f"approach 2: a = {n_fit['isoflop_a']:.2f}")
    curve = [(c, optimal_size(n_fit, c, law, (min(p.n for p in points), max(p.n for p in points)))) for c in cs]
    curve = [(c, n) for c, n in curve if n]
    if curve:
        right.plot(*zip(*curve, strict=True), "--", color="C0", label="approach 3")
    for label, key in (("approach 3", "n_opt"), ("approach 2", "isoflop_n_opt")):
        if n_fit[key]:
            right.plot([report["flops"]], [n_fit[key]], "o", ms=9, mfc="none", color="black")
            right.annotate(f"{label}: N {n_fit[key]:,.0f}", (report["flops"], n_fit[key]),
                           textcoords="offset points", xytext=(-8, 8 if key == "n_opt" else -14), ha="right",
                           fontsize=9)
    right.set(xscale="log", yscale="log", xlabel="training FLOPs", ylabel="compute-optimal N",
              title=f"optimal size by compute (○: flops={report['flops']:.3g})")
    right.legend(fontsize=9)
    return fig
