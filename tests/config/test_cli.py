"""Bad input gets one line `error: ...` on stderr, exit code 2, no traceback, and overwrites nothing: one test per
entry of the README's troubleshooting catalogue. Most run the real entry points (train.py, eval.py, generate.py)
in this process, exactly as `python train.py ...` does after the interpreter starts; the last tests run them as
real processes."""

import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, REPO, TINY
from hydra.core.hydra_config import HydraConfig

from gptlab.config import rundir
from gptlab.config.cli import clear_errors, describe, format_error
from gptlab.data import TrainWindows
from gptlab.data.datamodule import WikiText2DataModule
from gptlab.data.sampler import resume_position
from gptlab.errors import GptlabError
from gptlab.model import GPTConfig
from gptlab.training.module import GPTLitModule


def fails(capsys, monkeypatch, entry: str, *args: str) -> str:
    """Run `python <entry>.py args...` in this process; check it fails cleanly; return its error line."""
    monkeypatch.setattr(sys, "argv", [f"{entry}.py", *args])
    try:
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(str(REPO / f"{entry}.py"), run_name="__main__")
    finally:  # a process would end here; this one goes on to other tests: no Hydra state may stay behind
        HydraConfig.instance().cfg = None
    err = capsys.readouterr().err
    assert stop.value.code == 2, err[-3000:]
    assert "Traceback" not in err and "Error executing job" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


@pytest.fixture
def run_dir(tmp_path, token_cache_dir):
    """hydra.run.dir and the shared token cache, for runs that get as far as building."""
    return [f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={token_cache_dir}"]


def nano_checkpoint(path, **model):
    """A checkpoint as train.py writes it (plain hyper-parameters and weights) of a small untrained model."""
    module = GPTLitModule(model=GPTConfig(**{"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 64, **model}))
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    return path


def test_unknown_override_key(capsys, monkeypatch, tmp_path):
    line = fails(capsys, monkeypatch, "train", "trainer.max_step=5", f"hydra.run.dir={tmp_path / 'run'}")
    assert line == "error: unknown config key 'trainer.max_step' (did you mean trainer.max_steps?)"
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_unknown_config_option(capsys, monkeypatch):
    line = fails(capsys, monkeypatch, "train", "model=gpt_nanoo")
    assert line.startswith("error: Could not find 'model/gpt_nanoo'; available: gpt2, ") and "gpt_nano" in line


def test_wrong_value_type(capsys, monkeypatch, run_dir):
    line = fails(capsys, monkeypatch, "train", "trainer.max_steps=ten", *run_dir)
    assert line == "error: trainer.max_steps=ten: expected a whole number ≥ 1, or -1 for no limit"
    line = fails(capsys, monkeypatch, "train", "data.splits=valid", *run_dir)
    assert line == "error: data.splits=valid: expected a non-empty list, each item one of train, valid, test"


def test_negative_learning_rate(capsys, monkeypatch, run_dir):
    line = fails(capsys, monkeypatch, "train", "model=gpt_nano", "optimizer.lr=-0.001", *run_dir)
    assert line == "error: optimizer.lr=-0.001: expected a number ≥ 0"


def test_n_embd_not_divisible_by_n_head(capsys, monkeypatch, run_dir):
    line = fails(capsys, monkeypatch, "train", "model=gpt_nano", "model.n_embd=65", *run_dir)
    assert line == ("error: model.n_embd=65: expected a multiple of model.n_head=2 (each head gets n_embd / n_head "
                    "dimensions)")


def test_eval_block_size_larger_than_the_models(capsys, monkeypatch, run_dir, tmp_path):
    line = fails(capsys, monkeypatch, "train", "model=gpt_nano", "data.block_size=256", *run_dir)
    assert line == ("error: data.block_size=256 is larger than model.block_size=128: the model has no positions "
                    "past 128. Leave data.block_size at its default (${model.block_size})")
    ckpt = nano_checkpoint(tmp_path / "nano.ckpt")
    line = fails(capsys, monkeypatch, "eval", f"ckpt_path={ckpt}", "data.block_size=512",
                 f"hydra.run.dir={tmp_path / 'eval'}")
    assert line.startswith("error: data.block_size=512 is larger than model.block_size=32: ")


def test_16_mixed_precision_on_cpu(capsys, monkeypatch, run_dir):
    line = fails(capsys, monkeypatch, "train", "model=gpt_nano", "trainer.accelerator=cpu",
                 "trainer.precision=16-mixed", *run_dir)
    assert line == ("error: trainer.precision=16-mixed (float16) needs a CUDA GPU; on CPU use 32-true or "
                    "bf16-mixed")


def test_more_devices_than_exist(capsys, monkeypatch, run_dir):
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    line = fails(capsys, monkeypatch, "train", "model=gpt_nano", "trainer.accelerator=gpu",
                 f"trainer.devices={gpus + 1}", *run_dir)
    if gpus == 0:
        assert line == ("error: trainer.accelerator=gpu but this machine has no CUDA GPU: use "
                        "trainer.accelerator=auto or cpu")
    else:
        assert line.startswith(f"error: trainer.devices={gpus + 1} asks for {gpus + 1} GPUs but this machine "
                               f"has {gpus}")


def test_data_missing_offline(capsys, monkeypatch, tmp_path):
    # the download is tried (a local port that refuses connections, as offline) and fails
    url = "http://127.0.0.1:9/wikitext-2-v1.zip"
    monkeypatch.setattr(sys, "argv", ["train.py", "model=gpt_nano", f"paths.data_dir={tmp_path / 'data'}",
                                      f"paths.cache_dir={tmp_path / 'cache'}", f"data.urls=[{url}]",
                                      f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(REPO / "train.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    error = err[err.index("error: "):].splitlines()
    assert error[0].startswith("error: WikiText-2 (tokens) split(s) train, valid, test not found (looked in ")
    assert error[1:3] == ["  Download attempts:", f"  {url}: URLError: <urlopen error [Errno 111] Connection refused>"]
    assert any("GPTLAB_DATA_DIR" in line for line in error[3:])  # and how to fix it


def test_data_file_with_wrong_sha256(capsys, monkeypatch, tmp_path, data_dir):
    wt = tmp_path / "data" / "wikitext-2"
    wt.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        shutil.copy(data_dir / "wikitext-2" / f"wiki.{split}.tokens", wt)
    bad = wt / "wiki.valid.tokens"
    bad.write_bytes(bad.read_bytes() + b" tampered\n")
    content = bad.read_bytes()
    line = fails(capsys, monkeypatch, "train", "model=gpt_nano", f"paths.data_dir={tmp_path / 'data'}",
                 f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert line.startswith(f"error: {bad} has sha256 ") and "expected f0737ed31fc1329026e95cb8b98e19c2a1" in line
    assert "it was left untouched" in line
    assert bad.read_bytes() == content


def test_corrupt_token_cache_is_rebuilt_with_a_warning(tmp_path):
    dm = WikiText2DataModule(data_dir=DATA_DIR, cache_dir=tmp_path, splits=["valid"], download=False)
    ids = dm.ids("valid").copy()
    (npy,) = tmp_path.glob("*valid*.npy")
    data = bytearray(npy.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    npy.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"Token cache .* is unusable \(sha256 of the ids does not match the "
                                         r"sidecar\); rebuilding it"):
        rebuilt = WikiText2DataModule(data_dir=DATA_DIR,
                                      cache_dir=tmp_path, splits=["valid"], download=False).ids("valid")
    assert (rebuilt == ids).all()


def test_ckpt_path_that_does_not_exist(capsys, monkeypatch, run_dir, tmp_path):
    missing = tmp_path / "nope.ckpt"
    line = fails(capsys, monkeypatch, "train", "model=gpt_nano", f"ckpt_path={missing}", *run_dir)
    assert line == f"error: ckpt_path={missing} does not exist or is not a file"
    line = fails(capsys, monkeypatch, "eval", f"ckpt_path={missing}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert line == f"error: ckpt_path={missing} does not exist or is not a file"


def test_checkpoint_of_an_incompatible_model(capsys, monkeypatch, run_dir, tmp_path):
    ckpt = nano_checkpoint(tmp_path / "nano.ckpt")
    before = ckpt.read_bytes()
    line = fails(capsys, monkeypatch, "train", "model=gpt_nano", f"ckpt_path={ckpt}", *run_dir)
    assert line == (f"error: ckpt_path={ckpt} holds a model of another architecture than this run's: "
                    f"model.block_size=32 (this run: 128). Use the model config it was trained with (its run's "
                    f".hydra/config.yaml)")
    assert ckpt.read_bytes() == before


def test_empty_prompt(capsys, monkeypatch, tmp_path):
    line = fails(capsys, monkeypatch, "generate", f"ckpt_path={tmp_path / 'x.ckpt'}", "prompt=''",
                 f"hydra.run.dir={tmp_path / 'gen'}")
    assert line == "error: prompt='': expected a non-empty string, or null"


def test_malformed_task_jsonl(capsys, monkeypatch, tmp_path):
    bad = tmp_path / "qa.jsonl"
    bad.write_text('{"input": "Who wrote Hamlet?", "reference": "Shakespeare"}\n{"input": "What is 2+2?", \n')
    line = fails(capsys, monkeypatch, "generate", f"ckpt_path={tmp_path / 'x.ckpt'}", "task=qa",
                 f"task_file={bad}", f"hydra.run.dir={tmp_path / 'gen'}")
    assert line.startswith(f"error: {bad}, line 2: not valid JSON (")


def test_bad_input_on_resume_overwrites_nothing(capsys, monkeypatch, tmp_path, token_cache_dir):
    """A bad override given when resuming an existing run fails before touching its checkpoint or config."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / ".hydra").mkdir()
    ckpt, config = tmp_path / "checkpoints" / "last.ckpt", tmp_path / ".hydra" / "config.yaml"
    ckpt.write_bytes(b"the checkpoint of a long run")
    config.write_text("the config it was started with\n")
    line = fails(capsys, monkeypatch, "train", "model=gpt_nano", "optimizer.lr=-0.001", "resume=true",
                 f"hydra.run.dir={tmp_path}", f"paths.cache_dir={token_cache_dir}")
    assert line == "error: optimizer.lr=-0.001: expected a number ≥ 0"
    assert ckpt.read_bytes() == b"the checkpoint of a long run"
    assert config.read_text() == "the config it was started with\n"


# --- the error layer itself


def test_unexpected_errors_keep_their_traceback():
    @clear_errors
    def broken():
        return 1 / 0

    with pytest.raises(ZeroDivisionError):
        broken()
    with pytest.raises(AttributeError) as bug:
        resume_position(object())  # an operation inside gptlab failing is a bug, not a message for the user
    assert describe(bug.value) is None
    assert describe(GptlabError("x")) == "x"
    with pytest.raises(IndexError) as bug:  # a `raise` statement inside gptlab that is not about user input
        TrainWindows(np.arange(100), block_size=8)[10**6]
    assert describe(bug.value) is None
    with pytest.raises(FileNotFoundError) as bug:  # a missing file that the user did not name
        open("/nonexistent/gptlab/internal.txt")
    assert describe(bug.value) is None
    assert format_error("first\nsecond\n") == "error: first\n  second"


def test_hydra_full_error_shows_the_whole_story(monkeypatch):
    from hydra.errors import ConfigCompositionException

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr(sys, "argv", ["train.py", "trainer.max_step=5"])
    with pytest.raises(ConfigCompositionException):  # raised as it is: Python prints its traceback
        runpy.run_path(str(REPO / "train.py"), run_name="__main__")


# --- real processes


def run_entry(*args):
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.full
def test_a_real_process_prints_only_the_error_line_and_exits_2(tmp_path, token_cache_dir):
    proc = run_entry("model=gpt_nano", "optimizer.lr=-0.001", f"hydra.run.dir={tmp_path}",
                     f"paths.cache_dir={token_cache_dir}")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr
    lines = proc.stderr.strip().splitlines()  # Lightning's "Seed set to 1337" may come before it
    assert lines[-1] == "error: optimizer.lr=-0.001: expected a number ≥ 0"
    assert sum(line.startswith("error") for line in lines) == 1

    proc = run_entry("trainer.max_step=5", f"hydra.run.dir={tmp_path / 'typo'}")  # composition: nothing else
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: unknown config key 'trainer.max_step' (did you mean trainer.max_steps?)"


def tree(path):
    """Every file under `path` with its bytes, and every folder."""
    return {p.relative_to(path): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


@pytest.mark.full
def test_a_new_run_into_an_existing_run_directory_changes_nothing(tmp_path, token_cache_dir):
    run = tmp_path / "run"
    first = run_entry("model=gpt_nano", "debug=fast", "data.batch_size=2", "callbacks.progress_bar=null",
                      f"hydra.run.dir={run}", f"paths.cache_dir={token_cache_dir}")
    assert first.returncode == 0, first.stderr[-2000:]
    assert (run / "result.json").is_file() and (run / "samples.txt").is_file()
    before = tree(run)
    again = run_entry("model=gpt_nano", "debug=fast", "data.batch_size=2", "optimizer.lr=1e-4",
                      f"hydra.run.dir={run}", f"paths.cache_dir={token_cache_dir}")
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr.strip().splitlines()[-1].startswith(
        f"error: hydra.run.dir={run} already holds a run (checkpoints or metrics): nothing was written. "
        f"Add resume=true")
    assert tree(run) == before  # every byte, and no new file or folder

    # resume=true with no last.ckpt to resume from (debug=fast writes none): not a new run over the old one
    refused = run_entry("model=gpt_nano", "debug=fast", "data.batch_size=2", "resume=true", f"hydra.run.dir={run}",
                        f"paths.cache_dir={token_cache_dir}")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith(
        f"error: resume=true: hydra.run.dir={run} holds a run without checkpoints/last.ckpt to resume from")
    assert tree(run) == before

    # while another process holds a run directory (here: this one), a second run started into it (the same name in
    # the same second, or the same hydra.run.dir) is refused
    busy = tmp_path / "busy"
    rundir.claim(busy)
    second = run_entry("model=gpt_nano", "debug=fast", "data.batch_size=2", f"hydra.run.dir={busy}",
                       f"paths.cache_dir={token_cache_dir}")
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert second.stderr.strip().splitlines()[-1] == (
        f"error: hydra.run.dir={busy} is in use by another run, still running: nothing was written. Wait for it to "
        f"end, or choose another name or directory")
    assert sorted(str(p.relative_to(busy)) for p in busy.rglob("*")) == [".hydra", ".hydra/run.lock"]  # the claim


@pytest.mark.full
def test_a_resume_refused_for_a_changed_model_changes_nothing_but_the_log(tmp_path, tiny_run, token_cache_dir):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = tree(run)
    refused = run_entry(*TINY, "model.n_embd=96", "resume=true", f"hydra.run.dir={run}",
                        f"paths.cache_dir={token_cache_dir}")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "holds a model of another architecture" in refused.stderr.strip().splitlines()[-1]
    after = tree(run)  # its result.json, checkpoints, metrics and configs as they were; the log says why
    log = Path("train.log")
    assert after[log].startswith(before[log]) and {**after, log: None} == {**before, log: None}


@pytest.mark.parametrize("where", ["", "src/gptlab", "notes"])
def test_a_run_directory_is_never_a_folder_of_other_files(capsys, monkeypatch, tmp_path, where):
    """hydra.run.dir= (the working directory: here the project's root), a source folder, a folder of one's own
    files: refused in one line, and not even Hydra's log file is left there."""
    monkeypatch.chdir(REPO)
    folder = REPO / where
    if where == "notes":
        folder = tmp_path / "notes"
        folder.mkdir()
        (folder / "notes.txt").write_text("mine")
    before = sorted(p.name for p in folder.iterdir())
    given = folder if where == "notes" else where
    line = fails(capsys, monkeypatch, "train", "model=gpt_nano", f"hydra.run.dir={given}")
    assert line.startswith(f"error: hydra.run.dir={folder} holds files no run writes (")
    assert "so it must be a new one or a run's" in line
    assert sorted(p.name for p in folder.iterdir()) == before


@pytest.mark.parametrize("name", ["../../x", "a/b", "", ".."])
def test_a_run_name_is_a_plain_folder_name(capsys, monkeypatch, tmp_path, name):
    monkeypatch.chdir(tmp_path)
    line = fails(capsys, monkeypatch, "train", "model=gpt_nano", f"name={name}")
    assert line.startswith(f"error: name={name!r}: a run name must be a plain, non-empty folder name")
    assert list(tmp_path.rglob("*")) == []  # nothing written, inside or outside outputs/


@pytest.mark.parametrize(("override", "expected"), [
    ("+model.foo=1", "got an unexpected keyword argument 'foo'"),
    ("model.adaptive_cutoffs=5", "model.adaptive_cutoffs=5: expected a non-empty list, each item a whole number ≥ 1"),
])
def test_a_config_that_does_not_fit_its_target_is_one_line(capsys, monkeypatch, run_dir, override, expected):
    line = fails(capsys, monkeypatch, "train", "model=gpt_cpu", override, *run_dir)
    assert expected in line
