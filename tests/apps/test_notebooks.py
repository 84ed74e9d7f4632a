"""notebooks/ executed top to bottom against a real run and a real 2-job multirun; `python -m gptlab.apps.plot dir=...`
on the same directories; an Optuna study kept in SQLite and continued (issue 15)."""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import nbformat
import optuna
import pytest
from conftest import REPO
from nbclient import NotebookClient

from gptlab.apps.results.runs import load_run, load_runs

pytestmark = pytest.mark.full  # real training processes: the full suite, not the quick tier

NOTEBOOKS = REPO / "notebooks"
JOB = ["model=gpt_nano", "debug=tiny", "model.block_size=32", "data.batch_size=2", "callbacks.progress_bar=null"]


def train_multirun(sweep_dir, *overrides, cache_dir, env=None):
    cmd = [sys.executable, str(REPO / "train.py"), "-m", f"hydra.sweep.dir={sweep_dir}", *overrides]
    environ = {**os.environ, "GPTLAB_CACHE_DIR": str(cache_dir), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
               **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO, env=environ, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, token_cache_dir):
    """A 2-job multirun (two learning rates), logged to CSV and offline W&B."""
    sweep_dir = tmp_path_factory.mktemp("nb") / "sweep"
    proc = train_multirun(sweep_dir, "optimizer.lr=1e-3,3e-3", *JOB, "logger=wandb", cache_dir=token_cache_dir)
    return sweep_dir, proc


def execute(name, env=None, **variables):
    """Run notebooks/<name>.ipynb in its own kernel (gptlab, which setup registers) with the given values of its
    parameters cell and environment; returns the executed notebook and seconds."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]  # papermill's parameters cell
    for key, value in variables.items():  # its `KEY = default  # comment` lines
        cell.source = "\n".join(f"{key} = {value!r}" if line.startswith(f"{key} =") else line
                                 for line in cell.source.splitlines())
    assert nb.metadata.kernelspec.name == "gptlab"
    t0 = time.perf_counter()
    saved = dict(os.environ)
    os.environ.update(env or {})  # the kernel inherits it
    try:
        NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(REPO)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb, time.perf_counter() - t0


def outputs(nb, kind):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == kind]


def test_stored_notebooks_hold_no_outputs():
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear its outputs"


def test_runs_notebook_on_a_run_and_on_a_multirun(tiny_run, sweep):
    sweep_dir, _ = sweep
    nb, seconds = execute("runs", env={"GPTLAB_RUN": str(tiny_run)})  # as `GPTLAB_RUN=<dir> jupyter lab`
    text = "".join(o.text for o in outputs(nb, "stream"))
    assert f"{tiny_run}: 1 run(s)" in text and "--- step 6, val/loss" in text
    assert len([o for o in outputs(nb, "display_data") if "image/png" in o.data]) == 1  # the run's curves
    nb, seconds2 = execute("runs", RUN=str(sweep_dir))
    text = "".join(o.text for o in outputs(nb, "stream"))
    assert f"{sweep_dir}: 2 run(s)" in text
    table = text[text.index("job  overrides"):].splitlines()[1:3]  # sorted by val ppl
    ppl = [float(line.split()[-5].replace(",", "")) for line in table]
    assert ppl == sorted(ppl) and all(r.final("val/ppl") is not None for r in load_runs(sweep_dir))
    images = [o for o in outputs(nb, "display_data") if "image/png" in o.data]
    assert len(images) == 1 + 2 + 1  # the sweep, each job, the W&B curves
    print(f"runs.ipynb: {seconds:.0f} s on a run, {seconds2:.0f} s on a 2-job multirun")


def test_model_size_notebook_lists_every_model_option_and_predicts_a_real_runs_step(tiny_run, token_cache_dir):
    nb, seconds = execute("model_size", env={"GPTLAB_CACHE_DIR": str(token_cache_dir)}, BATCH=4,
                          MEASURE_MAX_PARAMS=4e6)
    text = "".join(o.text for o in outputs(nb, "stream"))
    for option in (REPO / "conf" / "model").glob("*.yaml"):
        assert f" {option.stem} " in text
    assert "124.4M" in text and "(estimated)" in text  # gpt2: from the code's accounting, its step estimated
    # gpt_nano at batch 4, timed as train.py trains it, against the tiny run (gpt_nano, batch 4) that train.py ran:
    # the same code, so the same speed but for the machine's noise (the old plain fp32 AdamW loop on random ids
    # was 15× off for gpt_cpu)
    (line,) = [line for line in text.splitlines() if line.startswith(" gpt_nano ")]
    predicted = float(line.split()[-1])
    result = json.loads((tiny_run / "result.json").read_text())
    measured = 4 * 128 / result["perf/tokens_per_sec"]
    assert measured / 3 < predicted < measured * 3, (predicted, measured)
    assert [o for o in outputs(nb, "display_data") if "image/png" in o.data]
    print(f"model_size.ipynb: {seconds:.0f} s")


def test_plot_command_writes_pngs_and_refuses_a_directory_without_metrics(tiny_run, sweep, tmp_path):
    sweep_dir, proc = sweep
    assert f"plots: {sweep_dir / 'plots' / 'sweep.png'}" in proc.stdout  # the multirun's end says where
    for path, expected in ((tiny_run, ["curves.png"]), (sweep_dir, ["job_0.png", "job_1.png", "sweep.png"])):
        done = subprocess.run([sys.executable, "-m", "gptlab.apps.plot", f"dir={path}"], cwd=REPO, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in (path / "plots").iterdir()) == expected
        assert all((path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in expected)
    figures = tmp_path / "figures"  # for a report: vector figures, elsewhere
    done = subprocess.run([sys.executable, "-m", "gptlab.apps.plot", f"dir={sweep_dir}", f"out={figures}",
                           "format=pdf"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in figures.iterdir()) == ["job_0.pdf", "job_1.pdf", "sweep.pdf"]
    assert all(p.read_bytes()[:5] == b"%PDF-" for p in figures.iterdir())
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "gptlab.apps.plot", f"dir={empty}"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.strip() == (
        f"error: {empty}: no run metrics here (csv/metrics.csv of a run, or of a multirun's jobs); train with "
        f"logger=csv (the default) and point at its directory")


def test_broken_run_files_are_named_and_a_row_being_written_is_left_out(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    metrics = run / "csv" / "metrics.csv"
    whole = load_run(run).rows
    with open(metrics, "a") as f:
        f.write(",".join(["0", "0.001"]))  # a run writing its next row: cut short after two fields
    assert load_run(run).rows == whole

    def plot_error(path):
        done = subprocess.run([sys.executable, "-m", "gptlab.apps.plot", f"dir={path}"], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        return done.stderr.strip()

    result = run / "result.json"
    result.write_text(result.read_text()[:40])  # killed mid-write (before writes were atomic), or edited
    assert plot_error(run).startswith(f"error: {result}: not a run's result (cut short, or edited?): ")
    result.unlink()
    metrics.write_bytes(b"\x00\xff\xfe")
    assert plot_error(run).startswith(f"error: {metrics}: not a run's metrics (not CSV text): ")
    metrics.write_text("a,b\n1,2\n")
    assert plot_error(run) == f"error: {metrics}: not a run's metrics (Lightning's CSVLogger writes a step column)"


def test_an_optuna_study_in_sqlite_is_continued_by_a_second_sweep(tmp_path, token_cache_dir):
    db = tmp_path / "study.db"
    common = ["+sweep=optuna", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage=sqlite:///{db}",
              "hydra.sweeper.study_name=nb", *JOB, "trainer.max_steps=2", "logger=csv"]
    train_multirun(tmp_path / "first", *common, cache_dir=token_cache_dir)
    assert len(optuna.load_study(study_name="nb", storage=f"sqlite:///{db}").trials) == 2
    train_multirun(tmp_path / "second", *common, cache_dir=token_cache_dir)
    study = optuna.load_study(study_name="nb", storage=f"sqlite:///{db}")
    assert len(study.trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    jobs = [json.loads((tmp_path / "second" / str(i) / "result.json").read_text()) for i in range(2)]
    assert [t.value for t in study.trials[2:]] == pytest.approx([j["val/ppl"] for j in jobs])
    nb, _ = execute("runs", RUN=str(tmp_path / "second"))
    assert "study nb: 4 trials, best" in "".join(o.text for o in outputs(nb, "stream"))


def test_figures_say_what_ran_and_annotate_the_scores(tiny_run, sweep):
    from gptlab.apps.results.figures import run_figure, sweep_figure

    run = load_run(tiny_run)
    fig = run_figure(run)
    assert re.fullmatch(rf"gpt_nano \(2 × 64\) · MuonAdamW lr 0\.01 · WSD · {run.result['precision']} · 6 steps   "
                        rf"\({tiny_run.name}\)", fig._suptitle.get_text())
    final = f"val ppl {run.final('val/ppl'):.2f}"
    assert [t.get_text() for a in fig.axes for t in a.texts if t.get_text().startswith("val ppl")] == [final] * 2
    sweep_dir, _ = sweep
    jobs = load_runs(sweep_dir)
    fig = sweep_figure(jobs)
    curves, bars = fig.axes
    assert [t.get_text() for t in curves.get_legend().get_texts()] == ["optimizer.lr=0.001", "optimizer.lr=0.003"]
    assert all(label.get_text().split(": ")[1].startswith("optimizer.lr=") for label in bars.get_yticklabels())
    (shared,) = [t.get_text() for t in fig.texts if t.get_text().startswith("every job: ")]  # once, for all jobs
    assert "debug=tiny" in shared and "optimizer.lr" not in shared
