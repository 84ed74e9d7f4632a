"""Bad input as a user types it, in real processes: one `error:` line naming the key, exit code 2, no traceback,
nothing left behind, and no training before a failure that could be found first (issue 13)."""

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import REPO

pytestmark = pytest.mark.full  # real training processes: the full suite, not the quick tier

NO_SHA = "data.sha256={wiki.train.tokens:null,wiki.valid.tokens:null,wiki.test.tokens:null}"


def run(entry, *args, env=None, stdin=None):
    return subprocess.run([sys.executable, str(REPO / f"{entry}.py"), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})}, stdin=stdin)


def one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def test_mistakes_that_gave_tracebacks_or_pointed_elsewhere_give_one_line(tmp_path, token_cache_dir):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory\n")
    train = ["model=gpt_nano", f"paths.cache_dir={token_cache_dir}"]
    cases = [  # (entry, args, environment, the error line's start)
        ("train", ["trainer.val_check_interval=0"], {}, "trainer.val_check_interval=0: expected a whole number ≥ 1"),
        ("train", ["trainer.accumulate_grad_batches=0"], {}, "trainer.accumulate_grad_batches=0: expected a whole"),
        ("train", ["seed=-1"], {}, "seed=-1: expected a whole number in 0..4294967295"),
        ("train", ["data.batch_size=1.5"], {}, "data.batch_size=1.5: expected a whole number"),
        ("train", ["trainer.gradient_clip_val=-1"], {}, "trainer.gradient_clip_val=-1: expected a number > 0"),
        ("train", ["trainer.max_time=10min"], {}, "trainer.max_time=10min: expected a duration DD:HH:MM:SS"),
        ("train", ["trainer.max_steps=0"], {}, "trainer.max_steps=0: expected a whole number ≥ 1, or -1"),
        ("train", ["final_limit_batches=0"], {}, "final_limit_batches=0: expected a whole number ≥ 1 or a fraction"),
        ("train", ["final_limit_batches=-1"], {}, "final_limit_batches=-1: expected a whole number ≥ 1"),
        ("train", [f"data.data_dir={a_file}"], {}, f"data.data_dir={a_file} is a file: expected a directory"),
        ("train", ["logger=wandb"], {"WANDB_MODE": "garbage"}, "WANDB_MODE=garbage (environment): expected one of"),
        ("train", [f"hydra.run.dir={a_file}/run"], {}, f"cannot create the run directory {a_file}/run: Not a "
                                                        f"directory (hydra.run.dir)"),
        ("train", ["model.n_embd=65536"], {}, "model: training it takes about"),  # (the allocator's traceback)
        ("train", ["train_flops=1e9"], {}, "train_flops=1e+09: less than one optimizer step, which trains "),
        ("train", ["train_flops=1e12", "callbacks.flop_budget=null"], {}, "train_flops=1e+12 needs callbacks."
                                                                          "flop_budget"),
        ("train", ["trainer.num_nodes=2"], {}, "trainer.num_nodes=2, but nothing started this run on several "
                                               "nodes: it would wait for the other nodes forever"),
        ("train", ["logger=wandb", "logger.wandb.offline=false"],
         {"WANDB_API_KEY": "k" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"},  # minutes of retries, a traceback
         "logger.wandb.offline=false: http://127.0.0.1:9 cannot be reached from this machine"),
        ("eval", ["ckpt_path=x.ckpt", "device=cuda"], {"CUDA_VISIBLE_DEVICES": ""},
         "device=cuda but this machine has no CUDA GPU"),
        ("generate", ["ckpt_path=x.ckpt", "device=cuda"], {"CUDA_VISIBLE_DEVICES": ""},
         "device=cuda but this machine has no CUDA GPU"),
        ("generate", ["ckpt_path=x.ckpt", "prompt=café"], {}, "cannot parse the override 'prompt=café'"),
        ("eval", ["ckpt_path=x.ckpt", "precision=16-mixed"], {"CUDA_VISIBLE_DEVICES": ""},
         "precision=16-mixed (float16) needs a CUDA GPU"),
    ]

    def attempt(case):
        entry, args, env, expected = case
        out = tmp_path / f"run{cases.index(case)}"
        given = ([] if any(a.startswith("hydra.run.dir") for a in args) else [f"hydra.run.dir={out}"])
        proc = run(entry, *(train if entry == "train" else []), *given, *args, env=env)
        return case, out, proc

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(attempt, cases))
    for (entry, args, _, expected), out, proc in results:
        line = one_error_line(proc)
        assert line.startswith(f"error: {expected}"), (entry, args, line)
        assert not out.exists(), (entry, args, sorted(out.rglob("*")))  # a refused run leaves no directory
    assert "quote a value with other characters: \"prompt='café'\"" in results[-2][2].stderr


def test_generate_with_stdin_closed_says_how_to_give_a_prompt(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "generate.py"), "ckpt_path=x.ckpt",
                           f"hydra.run.dir={tmp_path / 'g'}"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL, preexec_fn=lambda: os.close(0))
    assert one_error_line(proc).startswith("error: no prompt: give prompt=... (stdin is closed")


@pytest.fixture
def data_copy(tmp_path, data_dir):
    """A writable copy of WikiText-2 (tokens) to break."""
    wt = tmp_path / "data" / "wikitext-2"
    wt.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        shutil.copy(data_dir / "wikitext-2" / f"wiki.{split}.tokens", wt)
    return wt


@pytest.mark.parametrize("broken", ["not_utf8", "empty_valid"])
def test_broken_data_is_refused_before_training(tmp_path, data_copy, token_cache_dir, broken):
    bad = data_copy / "wiki.valid.tokens"
    text = bad.read_bytes()
    if broken == "not_utf8":
        offset = text.index(b" = Homarus gammarus")
        bad.write_bytes(text[:offset] + b"\xff\xfe" + text[offset:])
    else:
        bad.write_bytes(b"")
    run_dir = tmp_path / "run"
    proc = run("train", "model=gpt_nano", f"paths.data_dir={data_copy.parent}", f"paths.cache_dir={token_cache_dir}",
               NO_SHA, f"hydra.run.dir={run_dir}", "trainer.max_steps=5", "callbacks.progress_bar=null")
    line = one_error_line(proc)
    if broken == "not_utf8":
        line_no = text[:offset].count(b"\n") + 1
        assert line == (f"error: {bad} is not UTF-8 text: byte {offset} (line {line_no}) is b'\\xff'. Give a "
                        f"WikiText-2 file saved as UTF-8")
    else:
        assert line == (f"error: {bad} holds 0 tokens, too few for one window of data.block_size + 1 = 129: it is "
                        f"empty or cut short")
    assert not run_dir.exists(), sorted(run_dir.rglob("*"))  # refused after the config check: nothing left either
    assert "Epoch" not in proc.stdout + proc.stderr  # no training step ran
