"""One declaration per key (gptlab/config/declare.py): a value is checked, a refusal says what was expected, the Hydra
schema and the documentation come from the same field; and the config layer needs neither torch nor lightning."""

import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

import pytest
from conftest import REPO

from gptlab.config.declare import (
    COUNT_MAX,
    Duration,
    Fraction,
    Refused,
    check_fields,
    describe,
    key,
    refusal,
    schema,
    signature_refusal,
)


@dataclass(kw_only=True)
class Example:
    steps: int = key(10, "how many", ge=1, le=COUNT_MAX, special={-1: "no limit"})
    rate: float = key(0.5, "a share", gt=0, le=1)
    kind: Literal["a", "b"] = key("a", "which one")
    size: int | Fraction = key(1.0, "batches or a share", ge=1)
    names: list[str] = key(["x"], "some names")
    budget: Duration | None = key(None, "how long")
    required: str = key(help="no default: the config sets it")

    def __post_init__(self):
        check_fields(self, "example.")


def test_a_declared_field_checks_its_values_and_says_what_it_expected():
    Example(required="r", steps=-1, size=0.25, budget={"minutes": 3})  # -1 is a special value outside the bounds
    cases = {
        "steps": (0, "a whole number ≥ 1 (below 2^31), or -1 for no limit"),
        "rate": (0, "a number > 0 and ≤ 1"),
        "kind": ("c", "one of a, b"),
        "size": (2.5, "a whole number ≥ 1 or a fraction in (0, 1] written with a point (0.5, 1.0)"),
        "names": ([], "a non-empty list, each item a non-empty string"),
        "budget": ("10min", "a duration DD:HH:MM:SS (00:00:10:00 is ten minutes) or a dict such as {minutes: 10}, "
                            "or null"),
    }
    for name, (value, expected) in cases.items():
        with pytest.raises(Refused) as e:
            Example(required="r", **{name: value})
        assert str(e.value) == f"example.{name}={value if not isinstance(value, list) else '[]'}: expected {expected}"
    with pytest.raises(Refused, match=r"example.steps=true: expected a whole number"):
        Example(required="r", steps=True)  # a boolean is not a number
    assert refusal(float, {"ge": 0}, "lr", float("nan")) is not None  # nor is NaN


def test_the_schema_has_the_same_keys_and_defaults_and_leaves_the_checking_to_gptlab():
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(schema(Example))
    assert OmegaConf.to_container(cfg)["steps"] == 10 and cfg.names == ["x"]
    assert OmegaConf.is_missing(cfg, "required")  # the config must set it
    cfg.steps = "ten"  # typed Any: OmegaConf converts nothing; gptlab says what it expected
    assert cfg.steps == "ten"


def test_the_documentation_comes_from_the_declaration():
    rows = {k: (t, d, h) for k, t, d, h in describe(Example)}
    assert rows["kind"] == ("a | b", "a", "which one [one of a, b]")
    assert rows["required"][1] == "(set by the config)"
    assert rows["budget"][0] == "duration | null"


def test_another_librarys_arguments_are_checked_against_its_own_signature():
    import torch

    assert signature_refusal(torch.optim.AdamW, {"lr": 1e-3, "betas": [0.9, 0.99], "fused": True}, "o") is None
    refused = signature_refusal(torch.optim.AdamW, {"lr": "abc"}, "optimizer")
    assert str(refused) == "optimizer.lr=abc: expected a number (AdamW's `lr`)"
    refused = signature_refusal(torch.optim.AdamW, {"betas": 0.9}, "optimizer")
    assert str(refused).startswith("optimizer.betas=0.9: expected a list of 2 items")


def test_the_config_layer_imports_neither_torch_nor_lightning():
    """Composing, checking and refusing a config, --help and --cfg job: none of them needs torch."""
    code = ("import sys, importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'lightning'):\n"
            "            raise ImportError(f'blocked: {name}')\n"
            "sys.meta_path.insert(0, Block())\n"
            "import runpy\n"
            "sys.argv = sys.argv[1:]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    for args in (["--help"], ["--cfg", "job"], ["model=gpt_nanoo"], ["data.batch_size=0"], ["trainer.max_step=5"]):
        proc = subprocess.run([sys.executable, "-c", code, str(REPO / "train.py"), *args, "hydra.run.dir=/nonexistent"],
                              cwd=REPO, capture_output=True, text=True, timeout=60,
                              env={"GPTLAB_FAST_MALLOC": "0", "PATH": ""})
        assert "blocked" not in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr[-2000:])
        assert proc.returncode == (0 if args[0].startswith("--") else 2), (args, proc.stderr[-2000:])


def test_the_reference_of_every_key_is_current():
    from gptlab.config.compose import reference

    assert (REPO / "docs" / "config.md").read_text() == reference() + "\n", "run python scripts/config_reference.py"


@pytest.mark.parametrize("value", ["00:00:06:00", "01:02:03:04", {"minutes": 1, "seconds": 30}, {"weeks": 1},
                                   {"hours": 0.5, "milliseconds": 500}])
def test_a_duration_is_read_in_seconds_as_lightnings_timer_reads_it(value):
    from lightning.pytorch.callbacks import Timer
    from omegaconf import OmegaConf

    assert Duration.accepts(value)
    assert Duration.seconds(value) == Timer(duration=value)._duration
    if isinstance(value, dict):
        assert Duration.seconds(OmegaConf.create(value)) == Timer(duration=value)._duration  # as Hydra passes it
    assert Duration.seconds(None) is None
