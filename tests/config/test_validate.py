"""The check of a composed config before anything runs, in-process, no training: every leaf key of every command's
config walked with bad values, gptlab's keys with values made from their own declarations (just past each bound,
the wrong kind, a choice that is not one), then the cases users found, one by one."""

import copy
import json
import re
import typing

import pytest
import torch
from conftest import REPO
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf, open_dict

from gptlab.apps import evaluate, generate, train
from gptlab.apps.train import build_trainer
from gptlab.config.declare import Kind
from gptlab.config.run import APPS
from gptlab.config.validate import declaration_of, declared_keys, leaves, validate
from gptlab.errors import GptlabError

CONF = REPO / "conf"
GENERIC = [0, -1, 10**12, 1.5, "abc", ""]  # bad for most keys, whatever they are
COMMANDS = {"train": train.check, "eval": evaluate.check, "generate": generate.check}
GROUPS = {"train": ["data", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment",
                    "debug"],
          "eval": ["data"], "generate": ["task"]}


@pytest.fixture(autouse=True)
def hydra_app(monkeypatch):
    """Hydra initialised for the whole test, as inside an app. The Hub offline: a bad init_from is refused at once,
    on any machine."""
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


def check(cfg, app):
    """What a command checks before it runs: the config (no torch), the machine, the model to load, and for
    train.py every component built by its library (a tiny parameter group stands in for the model)."""
    COMMANDS[app](cfg)
    if app == "train":
        weight = torch.nn.Parameter(torch.zeros(2, 2))
        build_trainer(cfg, [{"params": [weight], "name": "matrix"},
                            {"params": [torch.nn.Parameter(torch.zeros(2))], "name": "other"}])


def refusal(cfg, key, value, app):
    """None when the config with key=value passes, else the one-line message that refused it."""
    cfg = copy.deepcopy(cfg)
    OmegaConf.update(cfg, key, value, merge=False)
    try:
        check(cfg, app)
    except GptlabError as e:
        return str(e)
    return None


def names(message, key, raw) -> bool:
    """A refusal names the key, or the key it takes its value from when it is a plain reference (${seed}), or the
    component it belongs to when that component's library refused it."""
    source = raw[key][2:-1] if isinstance(raw[key], str) and raw[key].startswith("${") else key
    return any(message.startswith(k) or k in message for k in (key, source, key.rsplit(".", 1)[0]))


def bad_values(f) -> list:
    """Values that a declared key's type and bounds refuse: made from the declaration alone."""
    meta, members = f.metadata, typing.get_args(f.type) or (f.type,)
    values = [] if type(None) in members else [None]
    for t in members:
        if t is bool:
            values += [1, "yes"]
        elif t is int:
            values += [2.5, "7"] + [b - 1 for b in [meta["ge"]] if b is not None and b - 1 not in meta["special"]]
            values += [b + 1 for b in [meta["le"]] if b is not None]
        elif t is float:
            values += ["0.5", float("nan")] + [b for b in [meta["gt"]] if b is not None]
            values += [b - 1 for b in [meta["ge"]] if b is not None] + [b + 1 for b in [meta["le"]] if b is not None]
        elif t is str:
            values += [3] + ([] if meta["empty"] or meta["blank"] else [" "])
        elif typing.get_origin(t) is typing.Literal:
            values += ["not-one-of-them"]
        elif isinstance(t, type) and issubclass(t, Kind):
            values += list(t.refuses)
        elif typing.get_origin(t) in (list, tuple):
            values += [7, [{"a": 1}]]
    return [v for v in values if not any(v == ok and type(v) is type(ok) for ok in members if ok is not Kind)]


@pytest.mark.full
@pytest.mark.parametrize("app", COMMANDS)
def test_every_leaf_key_with_bad_values_is_accepted_or_refused_in_one_line_naming_it(tmp_path, app):
    cfg = composed(app, tmp_path, *([] if app == "train" else ["ckpt_path=model.ckpt"]))
    check(cfg, app)  # the defaults pass
    raw = dict(leaves(cfg))
    fields = dict(declared_keys(cfg, APPS[app][0]))
    before = set(json.loads((REPO / "tests" / "fixtures" / "refused_at_2b8ab20.json").read_text())[app])
    refused, accepted = set(), set()
    for key in raw:
        declared_bad = bad_values(fields[key]) if key in fields else []
        for value in GENERIC + declared_bad:
            message = refusal(cfg, key, value, app)
            case = f"{key}={value!r}"
            if message is None:
                assert value not in declared_bad or value in GENERIC, f"{case}: its declaration refuses it"
                accepted.add(case)
                continue
            refused.add(case)
            assert "\n" not in message and names(message, key, raw), (case, message)
    # every bad value refused before gptlab's keys were declared once (commit 2b8ab20) is refused still, where its
    # key still exists, but for three that Lightning takes: ModelCheckpoint's filename='' (its default name) and
    # monitor='' (Lightning refuses it at the first validation, in one line), CSVLogger's version=-1 (a folder)
    gone = {case for case in before if case.split("=")[0] not in raw}
    lightnings = {"callbacks.model_checkpoint.filename=''", "callbacks.model_checkpoint.monitor=''",
                  "logger.csv.version=-1"}
    assert sorted(before - gone - lightnings - refused) == []
    print(f"{app}: {len(raw)} keys, {len(refused)} refused, {len(accepted)} accepted, {len(gone)} keys gone")


def librarys_arguments(target: str) -> bool:
    """Whether `target` takes another library's arguments: a class outside gptlab, or a gptlab class without a
    declaration whose constructor is its library's (apps.train.component checks them against its signature)."""
    if not target.startswith("gptlab."):
        return True
    module = getattr(getattr(get_object(target), "__init__", None), "__module__", None)  # None: object's
    return declaration_of(target) is None and module is not None and not module.startswith("gptlab.")


@pytest.mark.parametrize("app", COMMANDS)
def test_every_key_of_every_shipped_option_is_declared_or_its_librarys(tmp_path, app):
    """A key of the shipped configs is declared in gptlab/config (checked before anything runs), or an argument of
    another library's component (checked by that library when it is built; a gptlab subclass that keeps its
    library's arguments, e.g. training.loggers.CSVLogger, too): gptlab's own components declare all of theirs,
    so a key added to gptlab's code without its declaration fails here."""
    configs = [composed(app, tmp_path)] + [composed(app, tmp_path, f"{group}={option.stem}")
                                           for group in GROUPS[app] for option in (CONF / group).glob("*.yaml")]
    missing = set()
    for cfg in configs:
        fields = dict(declared_keys(cfg, APPS[app][0]))
        for key, _ in leaves(cfg):
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            node = OmegaConf.select(cfg, parent) if parent else cfg
            target = node.get("_target_") if isinstance(node, DictConfig) else None
            libraries = target is not None and librarys_arguments(str(target))
            switched_off = parent in ("callbacks", "logger")  # an entry set to null (a rule of config/run.py)
            if not switched_off and key not in fields and not key.endswith(("._target_", "._partial_")) \
                    and not libraries:
                missing.add(key)
    assert sorted(missing) == [], "declare these in gptlab/config/"


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
    ("train", "data.batch_size=1.5", "data.batch_size=1.5: expected a whole number ≥ 1"),
    ("train", "trainer.max_time=10min", "trainer.max_time=10min: expected a duration DD:HH:MM:SS"),
    ("train", "trainer.max_steps=ten", "trainer.max_steps=ten: expected a whole number ≥ 1, or -1 for no limit"),
    # the user's key, not the key that copies it
    ("train", "trainer.max_steps=0", "trainer.max_steps=0: expected a whole number ≥ 1, or -1 for no limit"),
    ("train", "trainer.max_steps=-1", "trainer.max_steps=-1: expected a whole number ≥ 1; scheduler.total_steps "
                                      "takes its value"),
    ("train", "model.block_size=0", "model.block_size=0: expected a whole number ≥ 1"),
    # across keys
    ("train", "data.block_size=512", "data.block_size=512 is larger than model.block_size=256"),
    ("train", "global_batch_tokens=1000", "global_batch_tokens=1000: expected a multiple of block_size × "
                                          "data.batch_size × processes = 256 × 8 × 1 = 2048"),
    ("train", "data.eval_stride=300", "data.eval_stride=300: expected at most data.block_size=256"),
    ("train", "data.splits=[train,valid]", "data.splits=[train,valid]: training needs train, valid and test"),
    ("train", "data.splits=valid", "data.splits=valid: expected a non-empty list"),
    ("eval", "split=all", "split=all: expected one of valid, test, both, train"),
    ("eval", "precision=16-mixed", "precision=16-mixed (float16) needs a CUDA GPU"),
    ("generate", "precision=16-mixed", "precision=16-mixed (float16) needs a CUDA GPU"),
    ("eval", "device=cuda", "device=cuda but this machine has no CUDA GPU"),
    ("generate", "device=cuda", "device=cuda but this machine has no CUDA GPU"),
    ("train", "trainer.accelerator=gpu", "trainer.accelerator=gpu but this machine has no CUDA GPU"),
    ("train", "trainer.precision=16-mixed", "trainer.precision=16-mixed (float16) needs a CUDA GPU"),
    ("generate", "top_p=0", "top_p=0: expected a number > 0 and ≤ 1, or null"),
    ("train", "model.n_embd=102", "model.n_embd=102: expected a multiple of model.n_head=4"),
    ("train", "compile=2", "compile=2: expected true or false"),
    ("train", "model.n_layer=1000000000000", "model.n_layer=1000000000000: expected a whole number ≥ 1 (below 2^31)"),
    ("train", "data.tokenizer=gpt3", "data.tokenizer=gpt3: expected a tiktoken encoding: "),
    ("generate", "task_file=x.jsonl", "task_file needs a task to score"),
    ("generate", "prompt=''", "prompt='': expected a non-empty string, or null"),
    ("train", "trainer=fsdp", "optimizer=muon with trainer=fsdp: Muon orthogonalises whole matrices"),
    # other libraries' arguments, refused by their own types and checks, naming the node
    ("train", "callbacks.model_checkpoint.save_top_k=1.5", "callbacks.model_checkpoint.save_top_k=1.5: expected a "
                                                           "whole number (ModelCheckpoint's `save_top_k`)"),
    ("train", "callbacks.model_checkpoint.mode=up", "callbacks.model_checkpoint: `mode` can be"),
    ("train", "optimizer=adamw optimizer.lr=-1", "optimizer: Invalid learning rate: -1"),
    ("train", "optimizer=adamw optimizer.betas=[0.9]", "optimizer.betas=[0.9]: expected a list of 2 items"),
])
def test_known_bad_values_are_refused_naming_the_users_key(tmp_path, monkeypatch, app, override, message):
    if "cuda" in override or "gpu" in override or "16-mixed" in override:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the refusal is for machines without one
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    cfg = composed(app, tmp_path, *override.split())
    with pytest.raises(GptlabError) as e:
        check(cfg, app)
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
    longer = composed("train", tmp_path, "trainer.max_time=00:00:20:00", "run_time={minutes: 10}")
    assert validate(longer, "train") == [
        "trainer.max_time=00:00:20:00 is not shorter than run_time={'minutes': 10}, which "
        "ends the whole run first; set run_time=null to train for trainer.max_time"]


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
    a_dir = tmp_path / "dir"
    a_dir.mkdir()
    (tmp_path / "plots").write_text("x")  # where the figures of a run in tmp_path would go
    for app, override, error in [  # every command's output location, before its work
        ("plot", f"dir={tmp_path}", f"out={tmp_path}/plots: cannot be created, {tmp_path}/plots is a file"),
        ("sweep", f"csv={a_file}/summary.csv", f"csv={a_file}/summary.csv: cannot be created, {a_file} is a file"),
        ("eval", f"report={a_dir}", f"report={a_dir} is a directory: expected a file to write"),
        ("generate", f"out_dir={a_file}/preds", f"out_dir={a_file}/preds: cannot be created, {a_file} is a file"),
        ("export", f"out={a_file}", f"out={a_file}: cannot be created, {a_file} is a file"),
    ]:
        required = {"sweep": [f"dir={tmp_path}"], "eval": ["ckpt_path=x.ckpt"], "generate": ["ckpt_path=x.ckpt"],
                    "export": ["ckpt_path=x.ckpt"]}.get(app, [])
        with pytest.raises(GptlabError, match=re.escape(error)):
            validate(composed(app, tmp_path, *required, override), app)
    cfg = composed("train", tmp_path, "logger=wandb")
    monkeypatch.setenv("WANDB_MODE", "garbage")
    with pytest.raises(GptlabError, match="WANDB_MODE=garbage .environment.: expected one of online, offline"):
        validate(cfg, "train")
    monkeypatch.setenv("WANDB_MODE", "offline")
    validate(cfg, "train")
