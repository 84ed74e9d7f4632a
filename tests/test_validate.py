"""The one validation of a composed config (gptlab/apps/validate.py, keys.py, rules.py, schema.py), in-process,
no training: every leaf key of the train, eval and generate configs with bad values of every kind, then the cases
a user found (issue 13) one by one."""

import copy
import json

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import ValidationError

from gptlab.apps.keys import rule_for
from gptlab.apps.rules import Unchecked
from gptlab.apps.validate import leaves, validate
from gptlab.errors import GptlabError

CONF = REPO / "conf"
APPS = ("train", "eval", "generate")
BAD_VALUES = [0, -1, 10**12, 1.5, "abc", ""]
GROUPS = {"train": ["data", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment",
                    "debug"],
          "eval": ["data"], "generate": ["task"]}


@pytest.fixture(autouse=True)
def hydra_app(monkeypatch):
    """Hydra initialised for the whole test, as inside an app (validate composes the defaults to compare types).
    The Hub offline: a bad init_from is refused at once, on any machine."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        yield
    HydraConfig.instance().cfg = None


def composed(app, tmp_path, *overrides):
    """The config an app's task function receives (no `hydra` node), with Hydra's runtime set as in a real run."""
    cfg = compose(app, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    task_cfg = copy.deepcopy(cfg)
    with open_dict(task_cfg):
        del task_cfg["hydra"]
    return task_cfg


def refusal(cfg, key, value, app):
    """None when the config with key=value passes validation, else the one-line message that refused it."""
    cfg = copy.deepcopy(cfg)
    try:
        OmegaConf.update(cfg, key, value, merge=False)
    except ValidationError as e:  # the schema refuses the type, as Hydra does at composition
        assert e.full_key == key, (key, value, str(e))
        return f"{key}: wrong type"
    try:
        validate(cfg, app)
    except GptlabError as e:
        return str(e)
    return None


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("app", APPS)
def test_every_leaf_key_with_bad_values_is_accepted_or_refused_in_one_line_naming_it(tmp_path, app):
    cfg = composed(app, tmp_path)
    validate(cfg, app)  # the defaults pass
    raw = dict(leaves(cfg))
    counts = {"accepted": 0, "refused": 0}
    for key in raw:
        for value in BAD_VALUES:
            message = refusal(cfg, key, value, app)
            if message is None:
                counts["accepted"] += 1
                continue
            counts["refused"] += 1
            assert "\n" not in message, (key, value, message)
            # the key itself, or the key it takes its value from when it is a plain reference (${seed})
            source = raw[key][2:-1] if isinstance(raw[key], str) and raw[key].startswith("${") else key
            assert message.startswith(f"{key}") or key in message or source in message, (key, value, message)
    (tmp_path / "counts.json").write_text(json.dumps(counts))
    print(f"{app}: {len(raw)} keys × {len(BAD_VALUES)} values: {counts}")
    assert counts["refused"] > counts["accepted"]  # most bad values of most keys are refused


@pytest.mark.parametrize("app", APPS)
def test_every_key_of_every_shipped_option_has_a_rule_of_its_own(tmp_path, app):
    configs = [composed(app, tmp_path)]
    for group in GROUPS[app]:
        configs += [composed(app, tmp_path, f"{group}={o}") for o in options(group)]
    configs += [composed(app, tmp_path, "trainer=fsdp")] if app == "train" else []
    missing = sorted({k for cfg in configs for k, _ in leaves(cfg)
                      if rule_for(k) is None or isinstance(rule_for(k), Unchecked)})
    assert missing == [], f"add a rule for each to gptlab/apps/keys.py: {missing}"


@pytest.mark.parametrize(("app", "override", "message"), [
    # nonsense values that trained without a word
    ("train", "trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1: expected a number > 0, or null"),
    ("train", "global_batch_tokens=0", "global_batch_tokens=0: expected a whole number ≥ 1"),
    ("train", "optimizer.lr=-1", "optimizer.lr=-1: expected a number ≥ 0"),
    ("train", "trainer.val_check_interval=0", "trainer.val_check_interval=0: expected a whole number ≥ 1 or a "
                                              "fraction"),
    ("train", "trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0: expected a whole number ≥ 1"),
    ("train", "seed=-1", "seed=-1: expected a whole number in 0..4294967295"),
    ("train", "final_limit_batches=0", "final_limit_batches=0: expected a whole number ≥ 1 or a fraction"),
    ("train", "final_limit_batches=-1", "final_limit_batches=-1: expected"),
    ("train", "data.batch_size=0", "data.batch_size=0: expected a whole number ≥ 1"),
    ("train", "trainer.max_time=10min", "trainer.max_time=10min: expected a duration DD:HH:MM:SS"),
    # the user's key, not the key that copies it
    ("train", "trainer.max_steps=0", "trainer.max_steps=0: expected a whole number ≥ 1, or -1 for no limit"),
    ("train", "trainer.max_steps=-1", "trainer.max_steps=-1: expected a whole number ≥ 1; scheduler.total_steps "
                                      "takes its value"),
    ("train", "model.block_size=0", "model.block_size=0: expected a whole number ≥ 1"),
    # across keys
    ("train", "data.block_size=512", "data.block_size=512 is larger than model.block_size=256"),
    ("train", "global_batch_tokens=1000", "global_batch_tokens=1000: expected a multiple of block_size × "
                                          "data.batch_size × processes = 2048"),
    ("train", "data.eval_stride=300", "data.eval_stride=300: expected at most data.block_size=256"),
    ("train", "data.splits=[train,valid]", "data.splits=[train,valid]: training needs train, valid and test"),
    ("eval", "split=all", "split=all: expected one of valid, test, both, train"),
    ("eval", "precision=16-mixed", "precision=16-mixed (float16) needs a CUDA GPU"),
    ("generate", "precision=16-mixed", "precision=16-mixed (float16) needs a CUDA GPU"),
    ("eval", "device=cuda", "device=cuda but this machine has no CUDA GPU"),
    ("generate", "device=cuda", "device=cuda but this machine has no CUDA GPU"),
    ("train", "trainer.accelerator=gpu", "trainer.accelerator=gpu but this machine has no CUDA GPU"),
    ("train", "trainer.precision=16-mixed", "trainer.precision=16-mixed (float16 mixed precision) needs a CUDA GPU"),
    ("generate", "top_p=0", "top_p=0.0: expected a number > 0 and ≤ 1, or null"),
    ("train", "model.n_embd=102", "model.n_embd=102: expected a multiple of model.n_head=4"),
    ("train", "compile=2", "compile=2: expected true or false"),
    ("train", "model.n_layer=1000000000000", "model.n_layer=1000000000000: expected a whole number ≥ 1 (below 2^31)"),
    ("train", "data.tokenizer=gpt3", "data.tokenizer=gpt3: expected a tiktoken encoding: "),
    ("generate", "task_file=x.jsonl", "task_file needs a task to score"),
    ("generate", "prompt=''", "prompt='': expected a non-empty string, or null"),
    ("train", "trainer=fsdp", "optimizer=muon with trainer=fsdp: Muon orthogonalises whole matrices"),
])
def test_known_bad_values_are_refused_naming_the_users_key(tmp_path, monkeypatch, app, override, message):
    import torch

    if "cuda" in override or "gpu" in override or "16-mixed" in override:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the refusal is for machines without one
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    cfg = composed(app, tmp_path, override)
    with pytest.raises(GptlabError) as e:
        validate(cfg, app)
    assert str(e.value).startswith(message)


def test_odd_but_valid_values_get_one_warning_line_each(tmp_path):
    cfg = composed("train", tmp_path, "optimizer.lr=0", "scheduler.warmup_steps=3000",
                   "trainer.val_check_interval=5000")
    warnings = validate(cfg, "train")
    assert warnings == [
        "scheduler.warmup_steps=3000 is not shorter than the run (2000 steps): the learning rate never reaches "
        "optimizer.lr",
        "optimizer.lr=0: the weights will not change",
        "trainer.val_check_interval=5000 is longer than the run (trainer.max_steps=2000): no validation until the end",
    ]
    assert validate(composed("train", tmp_path), "train") == []


def test_files_and_directories_are_checked_before_anything_runs(tmp_path, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cfg = composed("train", tmp_path, f"data.data_dir={a_file}")
    with pytest.raises(GptlabError, match=f"data.data_dir={a_file} is a file: expected a directory"):
        validate(cfg, "train")
    cfg = composed("train", tmp_path, f"callbacks.sample_text.path={a_file}/samples.txt")
    with pytest.raises(GptlabError, match=f"callbacks.sample_text.path={a_file}/samples.txt: cannot be created, "
                                          f"{a_file} is a file"):
        validate(cfg, "train")
    cfg = composed("train", tmp_path, "logger=wandb")
    monkeypatch.setenv("WANDB_MODE", "garbage")
    with pytest.raises(GptlabError, match="WANDB_MODE=garbage .environment.: expected one of online, offline"):
        validate(cfg, "train")
    monkeypatch.setenv("WANDB_MODE", "offline")
    validate(cfg, "train")
