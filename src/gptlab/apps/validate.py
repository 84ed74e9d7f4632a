"""One validation of the composed config, before anything is built: train.py, eval.py and generate.py call
`validate(cfg, app)` first thing.

1. Every leaf key against its rule (keys.py names it, rules.py defines it): its type and range, the user's key in
   the message. A key whose value is a plain reference to another (`scheduler.total_steps: ${trainer.max_steps}`)
   is reported under the key the user sets (`trainer.max_steps=0: ...`). Keys are checked in the order of their
   references, so the key a value came from is checked before the keys that copy it.
2. Rules across keys (`cross_checks`): the same rules in every app that has the keys.
3. What the machine must provide (`environment`): the data directory, output directories that can be created,
   the W&B mode, the device and precision.
Values that are valid but odd (lr 0, a warmup as long as the run) are logged as one warning line each.
Types are also checked by Hydra itself, at composition, for the keys of the schemas in schema.py.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from gptlab.apps import checks
from gptlab.apps.errors import check_override_types, refused_runs_leave_nothing
from gptlab.apps.keys import rule_for
from gptlab.apps.rules import Refused
from gptlab.errors import GptlabError

log = logging.getLogger(__name__)
_REFERENCE = re.compile(r"^\$\{([A-Za-z_][\w.]*)\}$")  # a value that is exactly another key: ${trainer.max_steps}
_REFERENCES = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")
WANDB_MODES = ("online", "offline", "disabled", "dryrun", "run", "shared")


def validate(cfg: DictConfig, app: str) -> list[str]:
    """Check cfg (of app "train", "eval" or "generate"); raise GptlabError naming the first bad key, else return
    the warnings (also logged). A single run refused here leaves no directory behind."""
    with refused_runs_leave_nothing():
        check_override_types()  # trainer.max_steps=ten: a string where the default is a number
        check_keys(cfg)
        warnings = cross_checks(cfg, app)
        environment(cfg, app)
    for w in warnings:
        log.warning(w)
    return warnings


# --- 1. each key


def leaves(cfg: DictConfig, prefix: str = ""):
    """(dotted key, raw value) of every leaf; a list is one leaf."""
    for key in cfg.keys():
        full = f"{prefix}{key}"
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_interpolation() and not node._is_none():
            yield from leaves(node, full + ".")
        else:
            yield full, node._value() if not isinstance(node, (DictConfig, ListConfig)) else node


def check_keys(cfg: DictConfig) -> None:
    raw = dict(leaves(cfg))
    for key in sorted(raw, key=lambda k: _depth(k, raw, set())):
        rule = rule_for(key)
        if rule is None:
            continue
        value = _value(cfg, key)
        if value is _UNSET:
            continue
        try:
            rule.check(value)
        except Refused as e:
            source = _source(key, raw)
            via = f"; {key} takes its value" if source != key else ""
            raise GptlabError(f"{source}={show(value)}: expected {e}{via}") from None


_UNSET = object()


def _value(cfg, key):
    """The resolved value of `key`; _UNSET for a value of Hydra's runtime outside a Hydra app (a library caller's
    config: there is nothing the user could have set wrong)."""
    from omegaconf.errors import InterpolationResolutionError

    try:
        value = OmegaConf.select(cfg, key)
    except InterpolationResolutionError as e:
        if "HydraConfig was not set" in str(e):
            return _UNSET
        raise
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _depth(key, raw, seen) -> int:
    """How many references lead from `key` to a plain value: 0 for a plain value."""
    refs = _REFERENCES.findall(raw[key]) if isinstance(raw.get(key), str) else []
    refs = [r for r in refs if r in raw and r not in seen]
    return 1 + max((_depth(r, raw, seen | {key}) for r in refs), default=-1) if refs else 0


def _source(key, raw) -> str:
    """The key a value comes from when it is a plain reference (${trainer.max_steps}), else the key itself."""
    seen = {key}
    while isinstance(raw.get(key), str) and (m := _REFERENCE.match(raw[key])) and m.group(1) not in seen:
        key = m.group(1)
        seen.add(key)
    return key


def show(value) -> str:
    if isinstance(value, str) and (value == "" or value != value.strip() or " " in value):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


# --- 2. across keys


def cross_checks(cfg: DictConfig, app: str) -> list[str]:
    """Rules that need two keys; returns the warnings."""
    warnings = []
    get = lambda key: OmegaConf.select(cfg, key, default=None)  # noqa: E731
    data_block, model_block = get("data.block_size"), get("model.block_size")
    if app == "train":
        if data_block is None:
            raise GptlabError("data.block_size=null: expected a whole number ≥ 1; leave it at its default "
                              "(${model.block_size})")
        checks.check_data_fits_model(data_block, model_block)
        n_embd, n_head = get("model.n_embd"), get("model.n_head")
        if n_embd % n_head:
            raise GptlabError(f"model.n_embd={n_embd}: expected a multiple of model.n_head={n_head} (each head gets "
                              f"n_embd / n_head dimensions)")
        missing = [s for s in ("train", "valid", "test") if s not in get("data.splits")]
        if missing:
            raise GptlabError(f"data.splits={show(list(get('data.splits')))}: training needs train, valid and test "
                              f"(missing: {', '.join(missing)})")
    stride, block = get("data.eval_stride"), data_block or model_block
    if stride is not None and block is not None and stride > block:
        raise GptlabError(f"data.eval_stride={stride}: expected at most data.block_size={block}")
    if app == "eval" and get("stride") is not None and data_block is not None and get("stride") > data_block:
        raise GptlabError(f"stride={get('stride')}: expected at most data.block_size={data_block}")
    if app == "train":
        warnings += _train_checks(cfg, get)
    if app == "eval" and get("documents") and get("data.variant") != "raw":
        raise GptlabError("documents=true scores whole articles of the raw text: add data=wikitext2_raw")
    if app == "generate" and get("task_file") and get("task") is None:
        raise GptlabError("task_file needs a task to score: task=qa, task=summarize or task=translate")
    return warnings


def _train_checks(cfg, get) -> list[str]:
    warnings = []
    max_steps = get("trainer.max_steps")
    total = get("scheduler.total_steps") if "total_steps" in (get("scheduler") or {}) else max_steps
    warmup = get("scheduler.warmup_steps")
    if warmup is not None and total is not None and total > 0 and warmup >= total:
        warnings.append(f"scheduler.warmup_steps={warmup} is not shorter than the run ({total} steps): the learning "
                        f"rate never reaches optimizer.lr")
    if get("optimizer.lr") == 0:
        warnings.append("optimizer.lr=0: the weights will not change")
    strategy = get("trainer.strategy")
    strategy = strategy.get("_target_", "") if isinstance(strategy, (dict, DictConfig)) else strategy
    if str(get("optimizer._target_")).endswith("MuonAdamW") and "fsdp" in str(strategy).lower():
        raise GptlabError("optimizer=muon with trainer=fsdp: Muon orthogonalises whole matrices and FSDP shards "
                          "them; add optimizer=adamw")
    interval = get("trainer.val_check_interval")
    if isinstance(interval, int) and not isinstance(interval, bool) and max_steps and 0 < max_steps < interval:
        warnings.append(f"trainer.val_check_interval={interval} is longer than the run (trainer.max_steps="
                        f"{max_steps}): no validation until the end")
    tokens = get("global_batch_tokens")
    if tokens is not None:
        if get("trainer.accumulate_grad_batches") not in (None, 1):
            raise GptlabError("set global_batch_tokens or trainer.accumulate_grad_batches, not both")
        per_pass = get("data.block_size") * get("data.batch_size")
        devices, nodes = get("trainer.devices"), get("trainer.num_nodes") or 1
        processes = (devices if isinstance(devices, int) and devices > 0 else len(devices)
                     if isinstance(devices, (list, ListConfig)) else None)
        if processes is not None:
            per_pass *= processes * nodes
        if tokens % per_pass:
            what = "block_size × data.batch_size" + (" × processes" if processes is not None else "")
            raise GptlabError(f"global_batch_tokens={tokens}: expected a multiple of {what} = {per_pass}: change "
                              f"global_batch_tokens, data.batch_size or trainer.devices")
    return warnings


# --- 3. the machine


def environment(cfg: DictConfig, app: str) -> None:
    """Directories, the W&B mode, and the device and precision."""
    from gptlab.training.precision import check_float16_device, resolve_device, resolve_precision

    get = lambda key: OmegaConf.select(cfg, key, default=None)  # noqa: E731
    for key in ("data.data_dir", "data.cache_dir", "paths.data_dir", "paths.cache_dir"):
        if get(key) and Path(str(get(key))).expanduser().is_file():
            raise GptlabError(f"{key}={get(key)} is a file: expected a directory (the one that holds wikitext-2/)")
    for key, value in _output_paths(cfg):
        _check_creatable(key, value)
    if app == "train":
        if "wandb" in (get("logger") or {}):
            mode = os.environ.get("WANDB_MODE")
            if mode is not None and mode not in WANDB_MODES:
                raise GptlabError(f"WANDB_MODE={mode} (environment): expected one of {', '.join(WANDB_MODES)}, or "
                                  f"unset")
        if get("model.init_from"):  # GPT-2 weights: found (or downloaded) and of the model's sizes, now
            from types import SimpleNamespace

            from gptlab.data.tokenizer import Tokenizer
            from gptlab.training.pretrained import check

            model = OmegaConf.to_container(cfg.model, resolve=True)
            model["vocab_size"] = Tokenizer(get("data.tokenizer"), get("data.data_dir")).vocab_size  # as build() sets
            check(get("model.init_from"), SimpleNamespace(**model), "model.init_from")
        trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
        checks.check_trainer(trainer, resolve_precision(trainer.get("precision", "auto"),
                                                        trainer.get("accelerator", "auto")))
    else:
        if get("ckpt_path") and get("init_from"):
            raise GptlabError("give ckpt_path (a trained checkpoint) or init_from (pretrained GPT-2), not both")
        if get("init_from"):
            from gptlab.training.pretrained import resolve

            resolve(get("init_from"), "init_from")
        device = resolve_device(get("device"))
        check_float16_device(resolve_precision(get("precision"), device.type), device.type)


_OUTPUT_KEYS = ("dirpath", "save_dir", "path", "report", "out_dir", "default_root_dir")


def _output_paths(cfg):
    for key, _ in leaves(cfg):
        if key.rsplit(".", 1)[-1] in _OUTPUT_KEYS and key != "paths.output_dir":
            value = _value(cfg, key)
            if isinstance(value, str) and value:
                yield key, value


def _check_creatable(key: str, value: str) -> None:
    """A directory or file that will be written: its nearest existing ancestor is a writable directory."""
    path = Path(value).expanduser().absolute()
    parent = path if key.rsplit(".", 1)[-1] not in ("path", "report") else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise GptlabError(f"{key}={value}: cannot be created, {parent} is a file")
    if not os.access(parent, os.W_OK):
        raise GptlabError(f"{key}={value}: cannot be created, {parent} is not writable")
