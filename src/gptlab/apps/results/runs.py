"""Reading finished runs back: a run directory (outputs/runs/<name>/<time>/) or a multirun's (outputs/multiruns/
<time>/, one subdirectory per job), for figures (figures.py) and the notebooks in notebooks/.

    runs = load_runs("outputs/multiruns/2026-12-01_10-00-00")   # one Run per job; a run directory gives one
    runs[0].series("val/ppl")                                   # (steps, values) from its csv/metrics.csv

What a run directory holds: csv/metrics.csv (Lightning's CSVLogger: one row per logged step), result.json (status
and final scores, result.py), .hydra/config.yaml and overrides.yaml, samples.txt, and with logger=wandb
wandb/offline-run-*/ (read with wandb's own reader, `read_wandb_run`).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gptlab.apps.results.result import RESULT_FILE, read_result
from gptlab.apps.results.table import job_dirs
from gptlab.errors import GptlabError


@dataclass
class Run:
    dir: Path
    rows: list[dict] = field(default_factory=list)  # metrics.csv, one dict per row, numbers as floats
    result: dict = field(default_factory=dict)  # result.json
    config: dict = field(default_factory=dict)  # result.json's resolved config, else .hydra/config.yaml
    overrides: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return " ".join(self.overrides) or self.dir.name

    @property
    def status(self) -> str:
        return self.result.get("status", "no result")

    def setting(self, key: str):
        """A value of the run's config (`data.batch_size`), its interpolations resolved where they can be; None
        when absent or not resolvable outside the run (`${hydra:...}`)."""
        from omegaconf import OmegaConf

        cfg = OmegaConf.create(self.config)
        try:
            return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        except Exception:  # a resolver of the run that is not registered here
            return None

    @property
    def tokens_per_step(self) -> int | None:
        """Training tokens per optimizer step, from the run's config."""
        if self.setting("global_batch_tokens"):
            return int(self.setting("global_batch_tokens"))
        devices = self.setting("trainer.devices")
        devices = devices if isinstance(devices, int) and devices > 0 else 1
        try:
            return (int(self.setting("data.block_size")) * int(self.setting("data.batch_size"))
                    * int(self.setting("trainer.accumulate_grad_batches") or 1) * devices
                    * int(self.setting("trainer.num_nodes") or 1))
        except (TypeError, ValueError):
            return None

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(steps, values) of a metric, from the rows that have it; validation at the end logs its own step."""
        pairs = [(r["step"], r[key]) for r in self.rows if r.get(key) is not None and r.get("step") is not None]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def keys(self, prefix: str = "") -> list[str]:
        return sorted({k for r in self.rows for k, v in r.items() if v is not None and k.startswith(prefix)})

    def samples(self) -> str:
        path = self.dir / "samples.txt"
        return path.read_text() if path.is_file() else ""

    def final(self, key: str):
        """A final score (val/ppl, test/word_ppl, perf/tokens_per_sec...) from result.json."""
        return self.result.get("metrics", {}).get(key, self.result.get(key))


def _number(text: str):
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def load_run(run_dir) -> Run:
    d = Path(run_dir)
    rows = []
    for path in sorted(d.glob("csv/**/metrics.csv")):
        try:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                if "step" not in (reader.fieldnames or []):
                    raise GptlabError(f"{path}: not a run's metrics (Lightning's CSVLogger writes a step column)")
                # a row cut short (the run is writing it) has missing fields (None), a whole one "": left out
                rows += [{k: _number(v) for k, v in row.items()} for row in reader
                         if None not in row.values() and None not in row]
        except (UnicodeDecodeError, csv.Error) as e:
            raise GptlabError(f"{path}: not a run's metrics (not CSV text): {e}") from None
    result = read_result(d)
    config, overrides = result.get("config") or {}, result.get("overrides") or []  # result's: as it ran
    if (d / ".hydra" / "config.yaml").is_file():
        from omegaconf import OmegaConf

        config = config or OmegaConf.to_container(OmegaConf.load(d / ".hydra" / "config.yaml"), resolve=False)
        if not overrides and (d / ".hydra" / "overrides.yaml").is_file():
            overrides = list(OmegaConf.load(d / ".hydra" / "overrides.yaml"))
    return Run(d, rows, result, config, [str(o) for o in overrides])


def load_runs(path) -> list[Run]:
    """The run at `path`, or every job of the multirun at `path` (in job order). Refuses a directory with neither
    metrics nor results in one line."""
    p = Path(path)
    if not p.is_dir():
        raise GptlabError(f"{path}: no such run or sweep directory")
    if any(p.glob("csv/**/metrics.csv")) or (p / RESULT_FILE).is_file():
        runs = [load_run(p)]
    else:
        runs = [load_run(d) for d in job_dirs(p)]
    if not any(r.rows for r in runs):
        raise GptlabError(f"{path}: no run metrics here (csv/metrics.csv of a run, or of a multirun's jobs); train "
                          f"with logger=csv (the default) and point at its directory")
    return runs


def newest(outputs="outputs") -> Path | None:
    """The run or multirun directory written last under outputs/runs and outputs/multiruns."""
    found = [p.parent.parent for p in Path(outputs).glob("runs/*/*/csv/**/metrics.csv")]
    found += [p for p in Path(outputs).glob("multiruns/*") if p.is_dir()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def read_wandb_run(run_dir) -> dict:
    """One offline W&B run directory (`<job>/wandb/offline-run-*`), read with wandb's own reader of .wandb files
    (`wandb leet inspect --json`): name, group, tags, run id, config, exit code and history rows."""
    wandb = Path(sys.executable).with_name("wandb")
    proc = subprocess.run([str(wandb), "leet", "inspect", "--json", str(run_dir)], capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        raise GptlabError(f"{run_dir}: wandb could not read this run: {proc.stderr.strip()[:200]}")
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    config = {}
    for update in [run.get("config", {})] + [r["config"] for r in records if r["type"] == "config"]:
        config.update(update.get("update", {}))  # wandb.config.update: top-level keys replaced
    exits = [r["exit"].get("exit_code", 0) for r in records if r["type"] == "exit"]
    return {"name": run.get("display_name"), "group": run.get("run_group"), "tags": run.get("tags", []),
            "run_id": run["run_id"], "config": config, "exit_code": exits[-1] if exits else None,
            "history": [r["history"]["item"] for r in records if r["type"] == "history"]}


def wandb_runs(run: Run) -> list[Path]:
    return sorted((run.dir / "wandb").glob("offline-run-*"))


def optuna_storage(path) -> tuple[str, str] | None:
    """(study name, storage URL) of an Optuna sweep at `path` that kept its study in a database
    (hydra.sweeper.storage=sqlite:///...); None for any other directory."""
    from omegaconf import OmegaConf

    for file in [Path(path) / "multirun.yaml", *sorted(Path(path).glob("*/.hydra/hydra.yaml"))]:
        if file.is_file():
            sweeper = OmegaConf.load(file).hydra.get("sweeper") or {}
            if sweeper.get("storage"):
                return str(sweeper.get("study_name")), str(sweeper.get("storage"))
            return None
    return None
