"""gptlab.startup.fast_malloc: the entry points restart Python once with malloc settings that keep big freed blocks,
so that a training step's large tensors stop page-faulting in again."""

import os
import subprocess
import sys

SCRIPT = """
import os, resource, sys
from gptlab.apps.runtime.startup import fast_malloc
fast_malloc()
import torch
for _ in range(10):  # warm up: the first allocations fault in whatever the settings
    torch.ones(64 << 18)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # a 64 MiB tensor made and freed, as a training step makes its activations and gradients
    torch.ones(64 << 18)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(os.environ.get("MALLOC_MMAP_THRESHOLD_"), os.environ.get("MALLOC_TRIM_THRESHOLD_"), faults, sys.argv[1:])
"""


def run(tmp_path, env_extra, *args):
    script = tmp_path / "entry.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GPTLAB_FAST_MALLOC"}
    env.update(env_extra)
    out = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    mmap, trim, faults, argv = out.stdout.split(" ", 3)
    return mmap, trim, int(faults), argv.strip()


def test_the_entry_point_restarts_with_malloc_settings_and_stops_page_faulting(tmp_path):
    mmap, trim, faults, argv = run(tmp_path, {}, "model=gpt_nano", "prompt=a b")
    assert (mmap, trim) == (str(4 << 30), str(4 << 30))
    assert argv == "['model=gpt_nano', 'prompt=a b']"  # the same command line after the restart
    _, _, default_faults, _ = run(tmp_path, {"GPTLAB_FAST_MALLOC": "0"})
    # 20 × 64 MiB = 327,680 pages: the default settings fault every one in again, the fast ones almost none
    assert default_faults > 300_000
    assert faults < default_faults / 20


def test_off_switch_and_user_settings_win(tmp_path):
    assert run(tmp_path, {"GPTLAB_FAST_MALLOC": "0"})[:2] == ("None", "None")
    mmap, trim, _, _ = run(tmp_path, {"MALLOC_MMAP_THRESHOLD_": "1048576"})
    assert (mmap, trim) == ("1048576", str(4 << 30))
