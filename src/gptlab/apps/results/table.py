"""The table of a multirun: one row per job (its overrides, val and test perplexity, tokens/s, status), printed and
written to <sweep dir>/summary.csv, at the end of every multirun and by `python -m gptlab.apps.sweep dir=<dir>`."""

import csv
import math
import statistics
from pathlib import Path

from gptlab.apps.results.result import RESULT_FILE, read_result
from gptlab.config.run import configuration
from gptlab.errors import GptlabFileNotFoundError

COLUMNS = ["job", "overrides", "val_ppl", "test_ppl", "tokens_per_sec", "status"]
SEED_FILE = "summary_by_configuration.csv"  # beside summary.csv, for a multirun over seed
SCORES = ("val_ppl", "test_ppl", "tokens_per_sec")


def short_value(value: str) -> str:
    """Optuna's sampled floats (0.000123456789) shortened to 4 significant digits, for names and tables."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if "." in value or "e" in value.lower() else value


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Directories of the sweep's jobs: those with a result, or with Hydra's record of a started job."""
    found = {p.parent for p in sweep_dir.rglob(RESULT_FILE)}
    found |= {p.parent.parent for p in sweep_dir.rglob("overrides.yaml") if p.parent.name == ".hydra"}
    found = {d for d in found if "wandb" not in d.relative_to(sweep_dir).parts}

    def order(d: Path):
        rel = d.relative_to(sweep_dir).as_posix()
        return (0, int(rel), "") if rel.isdigit() else (1, 0, rel)
    return sorted(found, key=order)


def read_job(job_dir: Path, sweep_dir: Path) -> dict:
    """One row: the job's result, or status `no result` for a job that is still running or was killed."""
    result = read_result(job_dir) or {"status": "no result"}
    overrides = result.get("overrides")
    hydra_overrides = job_dir / ".hydra" / "overrides.yaml"
    if not overrides and hydra_overrides.is_file():
        from omegaconf import OmegaConf

        overrides = list(OmegaConf.load(hydra_overrides))
    return {
        "job": job_dir.relative_to(sweep_dir).as_posix() or ".",
        "overrides": " ".join(overrides or []),
        "val_ppl": result.get("val/ppl"),
        "test_ppl": result.get("test/ppl"),
        "tokens_per_sec": result.get("perf/tokens_per_sec"),
        "status": result["status"],
        "error": result.get("error") or "",
        "dir": str(job_dir),
        "log": next((str(p) for p in sorted(job_dir.glob("*.log"))), None),  # Hydra's job log: train.log
    }


def collect(sweep_dir) -> list[dict]:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise GptlabFileNotFoundError(f"no such sweep directory: {sweep_dir}")
    return [read_job(d, sweep_dir) for d in job_dirs(sweep_dir)]


def short(override: str) -> str:
    key, sep, value = override.partition("=")
    return key + sep + short_value(value)


def _number(value, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def split_overrides(jobs: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """The overrides every job shares (in the first job's order), and each job's others, shortened (Optuna's
    floats): the sweep table and the sweep figure show the shared ones once."""
    split = [[short(o) for o in overrides] for overrides in jobs]
    common = set.intersection(*map(set, split)) if len(split) > 1 else set()
    return [o for o in split[0] if o in common] if split else [], [[o for o in s if o not in common] for s in split]


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table. Overrides shared by every job are printed once above it."""
    if not rows:
        return "no jobs found"
    common, own = split_overrides([r["overrides"].split() for r in rows])
    lines = [f"overrides of every job: {' '.join(common)}"] if common else []
    table = [["job", "overrides", "val ppl", "test ppl", "tokens/s", "status"]]
    for r, overrides in zip(rows, own, strict=True):
        status = r["status"] + (f" ({r['error']})" if r["error"] else "")
        table.append([r["job"], " ".join(overrides) or "-",
                      _number(r["val_ppl"], ".2f"), _number(r["test_ppl"], ".2f"),
                      _number(r["tokens_per_sec"], ",.0f"), status])
    widths = [max(len(row[i]) for row in table) for i in range(5)]  # the last column, status, is not padded
    for row in table:
        cells = [row[i].ljust(widths[i]) if i < 2 else row[i].rjust(widths[i]) for i in range(5)]
        lines.append("  ".join([*cells, row[5]]))
    done = [r for r in rows if r["status"] == "completed" and r["val_ppl"] is not None
            and not math.isnan(r["val_ppl"])]
    if done:
        best = min(done, key=lambda r: r["val_ppl"])
        lines.append(f"best val ppl {best['val_ppl']:.2f}: job {best['job']}")
    failed = [r for r in rows if r["status"] != "completed"]
    lines.append(f"{len(rows)} jobs, {len(rows) - len(failed)} completed, {len(failed)} failed or without a result")
    lines += [f"  job {r['job']}: {r['log']}" for r in failed if r.get("log")]  # where the job says what went wrong
    return "\n".join(lines)


def by_configuration(rows: list[dict]) -> list[dict]:
    """The completed jobs grouped by configuration (their overrides but the seed), in the order of their first
    job: {configuration, seeds, jobs, <score>_mean, <score>_std} (std: the sample standard deviation, None for
    one seed). Empty unless some configuration ran with more than one seed."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["status"] == "completed" and r["val_ppl"] is not None:
            groups.setdefault(" ".join(configuration(r["overrides"].split())), []).append(r)
    if all(len(g) < 2 for g in groups.values()):
        return []
    table = []
    for config, group in groups.items():
        row = {"configuration": config or "-", "seeds": len(group), "jobs": " ".join(r["job"] for r in group)}
        for score in SCORES:
            values = [r[score] for r in group if r[score] is not None]
            row[f"{score}_mean"] = statistics.fmean(values) if values else None
            row[f"{score}_std"] = statistics.stdev(values) if len(values) > 1 else None
        table.append(row)
    return table


def format_by_configuration(groups: list[dict]) -> str:
    """The configurations as an aligned table: mean ± std over their seeds."""
    def pm(row, score, fmt):
        mean, std = row[f"{score}_mean"], row[f"{score}_std"]
        return _number(mean, fmt) + ("" if std is None else f" ± {_number(std, fmt)}")

    common, own = split_overrides([g["configuration"].split() for g in groups])
    table = [["configuration", "seeds", "val ppl", "test ppl", "tokens/s"]]
    table += [[" ".join(o) or "-", str(g["seeds"]), pm(g, "val_ppl", ".2f"), pm(g, "test_ppl", ".2f"),
               pm(g, "tokens_per_sec", ",.0f")] for g, o in zip(groups, own, strict=True)]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    return "\n".join(["mean ± std over seeds, by configuration"
                      + (f" (and {' '.join(common)})" if common else "") + ":"]
                     + ["  ".join(row[i].ljust(widths[i]) if i == 0 else row[i].rjust(widths[i]) for i in range(5))
                        for row in table])


def write_csv(rows: list[dict], path) -> Path:
    path = Path(path)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*COLUMNS, "error", "dir", "log"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def summarize(sweep_dir, csv_path=None) -> list[dict]:
    """Print the table of a multirun directory and write it as CSV (default <sweep_dir>/summary.csv)."""
    rows = collect(sweep_dir)
    print(format_table(rows), flush=True)
    if rows:
        path = write_csv(rows, csv_path or Path(sweep_dir) / "summary.csv")
        print(f"written to {path}", flush=True)
    groups = by_configuration(rows)
    if groups:
        print(format_by_configuration(groups), flush=True)
        path = Path(path).with_name(SEED_FILE)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(groups[0]))
            writer.writeheader()
            writer.writerows(groups)
        print(f"written to {path}", flush=True)
    return rows
