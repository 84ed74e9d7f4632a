"""`pip install .` gives the whole command line: a wheel that carries the configs and the console scripts, run
from outside the repository, with Hydra's shell completion (issue 25)."""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.full  # builds and installs a wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from a copy of the sources (pip builds in the tree it is given), installed without its
    dependencies into a folder of its own; the dependencies come from this environment."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    shutil.copy(REPO / "README.md", source)
    for folder in ("src", "conf"):  # src/gptlab/conf links to ../../conf
        shutil.copytree(REPO / folder, source / folder, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))

    def pip(*args):
        proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]

    pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "wheel"), str(source))
    (wheel,) = (tmp / "wheel").glob("gptlab-*.whl")
    pip("install", "--no-deps", "--target", str(tmp / "site"), str(wheel))
    return tmp / "site", tmp


def command(installed, name, *args, env=None):
    site, cwd = installed
    return subprocess.run([str(site / "bin" / name), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(site), **(env or {})})


def test_the_wheel_runs_every_command_from_anywhere_with_its_own_configs(installed):
    site, cwd = installed
    which = subprocess.run([sys.executable, "-c", "import gptlab.config.cli as c; print(c.__file__, c.CONF)"],
                           cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(site)})
    module, conf = which.stdout.split()
    assert module.startswith(str(site)) and conf == str(site / "gptlab" / "conf")  # not the repository's
    assert (site / "gptlab" / "conf" / "hydra" / "launcher" / "slurm.yaml").is_file()
    for name in ("gptlab-train", "gptlab-eval", "gptlab-generate", "gptlab-export", "gptlab-plot", "gptlab-sweep"):
        proc = command(installed, name, "--help")
        assert proc.returncode == 0 and "== " in proc.stdout, (name, proc.stderr[-2000:])
    proc = command(installed, "gptlab-eval", "ckpt_path=nope.ckpt")  # the contract: one line, exit 2
    assert proc.returncode == 2 and proc.stderr.strip() == "error: ckpt_path=nope.ckpt does not exist or is not a file"
    proc = command(installed, "gptlab-lm-eval")
    assert proc.returncode == 2 and "error: lm-eval: No tasks specified" in proc.stderr


def test_shell_completion_of_the_console_scripts(installed):
    script = command(installed, "gptlab-train", "-sc", "install=bash").stdout
    assert "complete -o nospace -o default -F hydra_bash_completion gptlab-train" in script
    for line, expected in (("gptlab-train model=gpt_n", "model=gpt_nano"),
                           ("gptlab-train trainer.max_st", "trainer.max_steps=")):
        proc = command(installed, "gptlab-train", "-sc", "query=bash",
                       env={"COMP_LINE": line, "COMP_POINT": str(len(line))})
        assert proc.stdout.split() == [expected], proc.stderr[-2000:]
