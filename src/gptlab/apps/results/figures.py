"""Figures of a run or a multirun, shared by `python -m gptlab.apps.plot dir=DIR`, the end of every multirun and
notebooks/runs.ipynb.

A run: train loss and validation perplexity against steps and against training tokens (log scales), the learning
rate, and tokens/s. A multirun: every job's validation curve on one figure and a bar chart of the final val ppl.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from gptlab.apps.results.runs import Run, load_runs


def _plt():
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # files, no display; a notebook has chosen its backend before
    import matplotlib.pyplot as plt

    return plt


def run_figure(run: Run, title: str | None = None):
    """2 × 3 panels: loss and ppl by step, ppl by tokens, learning rate, tokens/s, final scores."""
    plt = _plt()
    fig, ax = plt.subplots(2, 3, figsize=(15, 8), layout="constrained")
    fig.suptitle(title or run.name or f"{run.setting('name') or ''} {run.dir.name}".strip())
    steps, loss = run.series("train/loss")
    ax[0, 0].plot(steps, loss, lw=0.8, label="train loss")
    vsteps, vloss = during_training(run, "val/loss")
    ax[0, 0].plot(vsteps, vloss, "o-", label="val loss")
    ax[0, 0].set(xlabel="step", ylabel="loss (nats/token)", title="loss")
    ax[0, 0].legend()
    psteps, ppl = during_training(run, "val/ppl")
    final = run.final("val/ppl")
    per_step = run.tokens_per_step or 0
    for a, scale in ((ax[0, 1], 1), (ax[0, 2], per_step)):
        a.plot([s * scale for s in psteps], ppl, "o-", label="during training (limit_val_batches)")
        if isinstance(final, (int, float)) and run.result.get("steps"):
            a.plot([run.result["steps"] * scale], [final], "*", ms=12, label="final, full split")
        a.legend(fontsize=7)
    ax[0, 1].set(xlabel="step", ylabel="val perplexity", yscale="log", title="validation perplexity")
    if per_step and psteps and min(psteps) > 0:
        ax[0, 2].set(xscale="log")
    ax[0, 2].set(xlabel="training tokens", ylabel="val perplexity", yscale="log", title="perplexity by tokens")
    for key in run.keys("lr-"):
        ax[1, 0].plot(*run.series(key), label=key.removeprefix("lr-"))
    if run.keys("lr-"):
        ax[1, 0].legend(fontsize=7)
    ax[1, 0].set(xlabel="step", ylabel="learning rate", title="learning rate")
    ax[1, 1].plot(*run.series("perf/tokens_per_sec"))
    ax[1, 1].set(xlabel="step", ylabel="tokens/s", title="throughput")
    ax[1, 2].axis("off")
    ax[1, 2].text(0, 1, summary_text(run), va="top", family="monospace", fontsize=9)
    return fig


def during_training(run: Run, key: str):
    """A validation metric's points during training: without the final full-split validation (result.json's score,
    the last row), which the figures mark on their own."""
    steps, values = run.series(key)
    final = run.final(key)
    if steps and isinstance(final, (int, float)) and math.isclose(values[-1], final, rel_tol=1e-6):
        return steps[:-1], values[:-1]
    return steps, values


def summary_text(run: Run) -> str:
    lines = [f"status  {run.status}"]
    for key in ("val/ppl", "test/ppl", "val/word_ppl", "test/word_ppl", "val/bpb", "test/bpb"):
        if isinstance(run.final(key), (int, float)):
            lines.append(f"{key:<14}{run.final(key):.4g}")
    if run.result.get("steps") is not None:
        lines.append(f"steps   {run.result['steps']}")
    if run.final("perf/tokens_per_sec"):
        lines.append(f"tokens/s {run.final('perf/tokens_per_sec'):,.0f}")
    return "\n".join(lines)


def job_table(runs: list[Run]) -> list[dict]:
    """One row per job, sorted by final val ppl (failed jobs last)."""
    rows = [{"job": r.dir.name, "overrides": r.name, "status": r.status, "val_ppl": r.final("val/ppl"),
             "test_ppl": r.final("test/ppl"), "val_word_ppl": r.final("val/word_ppl"),
             "test_bpb": r.final("test/bpb"), "tokens_per_sec": r.final("perf/tokens_per_sec"),
             "steps": r.result.get("steps")} for r in runs]
    return sorted(rows, key=lambda row: row["val_ppl"] if isinstance(row["val_ppl"], (int, float)) else math.inf)


def format_table(rows: list[dict]) -> str:
    def cell(v):
        return f"{v:,.2f}" if isinstance(v, float) else "" if v is None else str(v)

    keys = list(rows[0]) if rows else []
    widths = {k: max(len(k), *(len(cell(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(cell(r[k]).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)


def sweep_figure(runs: list[Run], title: str | None = None):
    """Every job's validation perplexity by step, and the final val ppl of each job as bars."""
    plt = _plt()
    fig, (curves, bars) = plt.subplots(1, 2, figsize=(15, 5.5), layout="constrained")
    fig.suptitle(title or "sweep")
    for r in runs:
        steps, ppl = r.series("val/ppl")
        if steps:
            curves.plot(steps, ppl, "o-", label=r.name, ms=3)
    curves.set(xlabel="step", ylabel="val perplexity", yscale="log", title="validation perplexity, every job")
    if any(r.series("val/ppl")[0] for r in runs):
        curves.legend(fontsize=7)
    table = [row for row in job_table(runs) if isinstance(row["val_ppl"], (int, float))]
    bars.barh([_short(f"{row['job']}: {row['overrides']}") for row in table], [row["val_ppl"] for row in table])
    bars.invert_yaxis()
    bars.set(xlabel="final val perplexity (full split)", title="jobs by val ppl (best first)")
    return fig


def _short(text: str, n: int = 48) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def write_pngs(path, out=None) -> list[Path]:
    """The figures of the run or multirun at `path`, as PNGs in `out` (None: <path>/plots/); returns their paths."""
    plt = _plt()
    runs = load_runs(path)
    out = Path(out or Path(path) / "plots")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if len(runs) == 1 and runs[0].dir == Path(path):
        figures = [(run_figure(runs[0]), out / "curves.png")]
    else:
        figures = [(sweep_figure(runs, title=f"sweep {Path(path).name}"), out / "sweep.png")]
        figures += [(run_figure(r), out / f"job_{'_'.join(r.dir.relative_to(path).parts)}.png")
                    for r in runs if r.rows]
    for fig, file in figures:
        fig.savefig(file, dpi=100)
        plt.close(fig)
        written.append(file)
    return written
