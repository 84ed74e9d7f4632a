"""Figures of a run or a multirun, shared by `python -m gptlab.apps.plot dir=DIR`, the end of every multirun and
notebooks/runs.ipynb.

A run: train loss and validation perplexity against steps and against training tokens (log scales), the learning
rate, and tokens/s. A multirun: every job's validation curve on one figure and a bar chart of the final val ppl
(over seeds: each configuration's mean ± std).
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

from gptlab.apps.results.runs import Run, load_runs
from gptlab.apps.results.table import split_overrides
from gptlab.config.run import configuration


def pyplot():
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # files, no display; a notebook has chosen its backend before
    import matplotlib.pyplot as plt

    return plt


def run_title(run: Run) -> str:
    """What trained, from the run's config: `gpt_cpu (4 × 256) · MuonAdamW lr 0.01 · WSD · bf16-mixed · 1,633
    steps`, and the run's folder."""
    def last(target):
        return str(target).rsplit(".", 1)[-1] if target else None

    shape = (f"({run.setting('model.n_layer')} × {run.setting('model.n_embd')})"
             if run.setting("model.n_layer") is not None else None)
    lr = run.setting("optimizer.lr")
    optimizer = last(run.setting("optimizer._target_"))
    parts = [" ".join(p for p in (run.setting("name"), shape) if p),
             f"{optimizer} lr {lr:g}" if optimizer and isinstance(lr, (int, float)) else optimizer,
             (last(run.setting("scheduler._target_")) or "").removesuffix("Schedule") or None,
             run.result.get("precision") or run.setting("trainer.precision"),
             f"{run.result['steps']:,} steps" if isinstance(run.result.get("steps"), int) else None]
    return " · ".join(str(p) for p in parts if p) + f"   ({run.dir.name})"


def _readable_log_axis(axis) -> None:
    """A log axis with labels at 1, 2 and 5 of each decade, as plain numbers (not three powers of ten)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    formatter = ScalarFormatter()
    formatter.set_scientific(False)
    axis.set_major_formatter(formatter)
    axis.set_minor_formatter(NullFormatter())


def _mark_final(a, x, y, text) -> None:
    a.plot([x], [y], "*", ms=14, color="black", zorder=5, label="final, full split")
    a.annotate(text, (x, y), textcoords="offset points", xytext=(-8, 10), ha="right", fontsize=10)


def run_figure(run: Run, title: str | None = None):
    """2 × 3 panels: loss and ppl by step, ppl by tokens, learning rate, tokens/s, final scores."""
    plt = pyplot()
    fig, ax = plt.subplots(2, 3, figsize=(15, 8), layout="constrained")
    fig.suptitle(title or run_title(run), fontsize=13)
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
            _mark_final(a, run.result["steps"] * scale, final, f"val ppl {final:.2f}")
        a.legend(fontsize=9)
    ax[0, 1].set(xlabel="step", ylabel="val perplexity", yscale="log", title="validation perplexity")
    if per_step and psteps and min(psteps) > 0:
        ax[0, 2].set(xscale="log")
        _readable_log_axis(ax[0, 2].xaxis)
    ax[0, 2].set(xlabel="training tokens", ylabel="val perplexity", yscale="log", title="perplexity by tokens")
    for a in (ax[0, 1], ax[0, 2]):
        _readable_log_axis(a.yaxis)
    for key in run.keys("lr-"):
        ax[1, 0].plot(*run.series(key), label=key.removeprefix("lr-"))
    if run.keys("lr-"):
        ax[1, 0].legend(fontsize=9)
    ax[1, 0].set(xlabel="step", ylabel="learning rate", title="learning rate")
    ax[1, 1].plot(*run.series("perf/tokens_per_sec"))
    ax[1, 1].set(xlabel="step", ylabel="tokens/s", title="throughput (training steps, validation left out)")
    ax[1, 2].axis("off")
    ax[1, 2].text(0, 1, summary_text(run), va="top", family="monospace", fontsize=11)
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
        value = run.final(key)
        if isinstance(value, (int, float)):
            lines.append(f"{key:<14}{value:,.4f}" if key.endswith("bpb") else f"{key:<14}{value:,.2f}")
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
    """Every job's validation perplexity by step, and the final val ppl of each job as bars; for a multirun over
    seeds, each configuration's curves in one colour and its bar the mean over its seeds, ± their std."""
    plt = pyplot()
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(" ".join(configuration(r.overrides)), []).append(r)
    seeded = any(len(g) > 1 for g in groups.values())
    keys = list(groups) if seeded else [r.dir.name for r in runs]
    common, own = split_overrides([k.split() for k in groups] if seeded else [r.overrides for r in runs])
    label = {k: " ".join(o) or k for k, o in zip(keys, own, strict=True)}  # what differs
    fig, (curves, bars) = plt.subplots(1, 2, figsize=(15, 5.5), layout="constrained")
    fig.suptitle(title or "sweep", fontsize=13)
    if common:  # the overrides every job shares, once, as the console's table does
        fig.text(0.5, -0.01, "every job: " + " ".join(common), ha="center", va="top", fontsize=9, wrap=True)
    colour, labelled = {k: f"C{i % 10}" for i, k in enumerate(keys)}, set()
    for r in runs:
        key = " ".join(configuration(r.overrides)) if seeded else r.dir.name
        steps, ppl = r.series("val/ppl")
        if steps:  # a configuration's seeds: one colour, one legend entry
            curves.plot(steps, ppl, "o-", label=None if key in labelled else label[key], ms=3, color=colour[key])
            labelled.add(key)
    curves.set(xlabel="step", ylabel="val perplexity", yscale="log", title="validation perplexity, every job")
    _readable_log_axis(curves.yaxis)
    if any(r.series("val/ppl")[0] for r in runs):
        curves.legend(fontsize=9)
    if seeded:
        scored = {k: [v for r in g if isinstance(v := r.final("val/ppl"), (int, float))] for k, g in groups.items()}
        table = sorted(((k, statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))
                        for k, v in scored.items() if v), key=lambda row: row[1])
        names = [f"{label[k]} ({n} seeds)" for k, _, _, n in table]
        bars.barh(names, [m for _, m, _, _ in table], xerr=[s for _, _, s, _ in table], capsize=4)
        texts = [f"{m:.2f} ± {s:.2f}" for _, m, s, _ in table]
        values = [m + s for _, m, s, _ in table]
        what = "configurations by mean val ppl over seeds (± std; best first)"
    else:
        rows = [row for row in job_table(runs) if isinstance(row["val_ppl"], (int, float))]
        bars.barh([f"{row['job']}: {label[row['job']]}" for row in rows], [row["val_ppl"] for row in rows])
        texts, values = [f"{row['val_ppl']:.2f}" for row in rows], [row["val_ppl"] for row in rows]
        what = "jobs by val ppl (best first)"
    for i, (text, value) in enumerate(zip(texts, values, strict=True)):
        bars.annotate(text, (value, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=9)
    bars.invert_yaxis()
    bars.set(xlabel="final val perplexity (full split)", title=what)
    return fig


def write_figures(path, out=None, format: str = "png", dpi: int = 150) -> list[Path]:
    """The figures of the run or multirun at `path`, as files of `format` in `out` (None: <path>/plots/); returns
    their paths."""
    plt = pyplot()
    runs = load_runs(path)
    out = Path(out or Path(path) / "plots")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if len(runs) == 1 and runs[0].dir == Path(path):
        figures = [(run_figure(runs[0]), out / f"curves.{format}")]
    else:
        figures = [(sweep_figure(runs, title=f"sweep {Path(path).name}"), out / f"sweep.{format}")]
        figures += [(run_figure(r), out / f"job_{'_'.join(r.dir.relative_to(path).parts)}.{format}")
                    for r in runs if r.rows]
    for fig, file in figures:
        fig.savefig(file, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        written.append(file)
    return written
