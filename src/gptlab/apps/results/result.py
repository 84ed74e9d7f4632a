"""<run dir>/result.json: how a run (or a multirun's job) ended, its final scores and its overrides. train.py writes
it; the sweep table, the figures and the notebooks read it."""

import json
import os
from pathlib import Path

from gptlab.errors import GptlabError

RESULT_FILE = "result.json"


def write_result(output_dir, status: str, metrics: dict | None = None, overrides=None, error: str | None = None,
                 **extra) -> Path:
    """status: completed or failed; metrics: the final val/test scores."""
    result = {"status": status, "overrides": list(overrides or []), "error": error, **extra, **(metrics or {})}
    path = Path(output_dir) / RESULT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{RESULT_FILE}.part")  # written whole, then renamed: a reader never sees half of it
    part.write_text(json.dumps(result, indent=2, default=float) + "\n")
    os.replace(part, path)
    return path


def read_result(run_dir) -> dict:
    """The result of the run in `run_dir`; {} when it has none (yet)."""
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        return {}
    try:
        result = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GptlabError(f"{path}: not a run's result (cut short, or edited?): {e}") from None
    if not isinstance(result, dict):
        raise GptlabError(f"{path}: not a run's result: a JSON {type(result).__name__}, not an object")
    return result
