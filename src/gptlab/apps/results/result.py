"""<run dir>/result.json: how a run (or a multirun's job) ended, its final scores and its overrides. train.py writes
it; the sweep table, the figures and the notebooks read it."""

import json
from pathlib import Path

RESULT_FILE = "result.json"


def write_result(output_dir, status: str, metrics: dict | None = None, overrides=None, error: str | None = None,
                 **extra) -> Path:
    """status: completed or failed; metrics: the final val/test scores."""
    result = {"status": status, "overrides": list(overrides or []), "error": error, **extra, **(metrics or {})}
    path = Path(output_dir) / RESULT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return path


def read_result(run_dir) -> dict:
    """The result of the run in `run_dir`; {} when it has none (yet)."""
    path = Path(run_dir) / RESULT_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
