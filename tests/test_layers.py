"""The package is layers: errors (the one user-error type) · config (no torch) · model · data · inference · training ·
apps, each importing only from itself and the layers below it, with no import cycle between modules; the entry
points import the config and apps layers only. Checked on the source (every import statement, at module level or
inside a function), and by importing each layer with what it must not need blocked."""

import ast
from pathlib import Path

import pytest
from conftest import REPO

SRC = REPO / "src" / "gptlab"
LAYERS = ["errors", "config", "model", "data", "inference", "training", "apps"]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The gptlab modules a file imports (`from gptlab.x import y` counts gptlab.x.y when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("gptlab")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gptlab") and not node.level:
            found.add(node.module)  # `from gptlab.data import x` runs gptlab/data/__init__.py
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
    return found


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def layer(module: str) -> int:
    part = module.split(".")[1] if module.count(".") else None
    return LAYERS.index(part) if part in LAYERS else -1  # gptlab/__init__: below everything


def test_every_module_belongs_to_a_layer():
    assert {m for m in MODULES if layer(m) < 0} == {"gptlab"}
    assert all((SRC / name / "__init__.py").is_file() for name in LAYERS[1:])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_from_its_layer_and_below(module):
    above = {m for m in imports(MODULES[module]) if layer(m) > layer(module)}
    assert not above, f"{module} ({LAYERS[layer(module)]}) imports from a higher layer: {sorted(above)}"


def test_no_import_cycle():
    graph = {m: {i for i in imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for dep in sorted(graph[m]):
            assert state.get(dep) != "open", f"import cycle: {' -> '.join(path[path.index(dep):] + [dep])}"
            if dep not in state:
                visit(dep)
        path.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_entry_points_import_the_config_and_apps_layers_only():
    for script in ("train.py", "eval.py", "generate.py"):
        used = imports(REPO / script)
        assert used and all(m.startswith(("gptlab.apps", "gptlab.config")) for m in used), (script, used)


ABOVE = {name: tuple(f"gptlab.{layer}" for layer in LAYERS[i + 1:]) for i, name in enumerate(LAYERS)}
BLOCKED = {  # a layer, and what must not be imported when it is: the layers above, and frameworks it does not need
    "config": (*ABOVE["config"], "torch", "lightning", "wandb"),
    "model": (*ABOVE["model"], "lightning", "hydra", "omegaconf", "wandb"),
    "data": (*ABOVE["data"], "hydra", "wandb"),
    "inference": (*ABOVE["inference"], "lightning", "hydra", "wandb"),
    "training": ABOVE["training"],
}


@pytest.mark.parametrize("name", sorted(BLOCKED))
def test_each_layer_imports_in_a_fresh_interpreter_with_the_layers_above_blocked(name):
    import subprocess
    import sys

    modules = sorted(m for m in MODULES if layer(m) == LAYERS.index(name))
    code = ("import sys, importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            f"        if name.split('.')[0] in {BLOCKED[name]!r} or name.startswith({BLOCKED[name]!r}):\n"
            "            raise ImportError(f'blocked: {name}')\n"
            "sys.meta_path.insert(0, Block())\n"
            + "".join(f"import {m}\n" for m in modules) + "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
