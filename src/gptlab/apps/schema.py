"""Structured-config schemas: the types of the keys of train.yaml, eval.yaml and generate.yaml and of the data and
model groups, registered in Hydra's ConfigStore and named first in those files' defaults lists. Hydra checks a
value against its type when it composes the config (`seed=abc`, `data.batch_size=1.5` fail there, with the
key's name), before any of gptlab runs; ranges and rules across keys are checked next, by validate.py.

The other groups (trainer, optimizer, scheduler, logger, callbacks) stay open dictionaries: their keys are the
arguments of a class chosen by `_target_` (any Lightning Trainer argument can be added with +trainer.key=...);
keys.py gives their types and ranges.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from gptlab.model import GPTConfig


@dataclass
class DataSchema:
    _target_: str = "gptlab.data.WikiText2DataModule"
    data_dir: str | None = None
    cache_dir: str | None = None
    variant: str = "tokens"
    tokenizer: str = "gpt2"
    block_size: int | None = None
    batch_size: int = 16
    eval_batch_size: int | None = None
    sampling: str = "random"
    eval_stride: int | None = None
    num_workers: int = 0
    seed: int = 1337
    download: Any = True
    splits: list[str] = field(default_factory=lambda: ["train", "valid", "test"])
    urls: Any = None  # a list of URLs (keys.py)
    sha256: Any = None  # {file name: sha256 or null}; a typed dict here trips an OmegaConf merge bug


def _model_schema():
    """GPTConfig's fields with their types (a tuple as a list of ints; booleans left to keys.py, which refuses
    the 0/1 that OmegaConf would turn into false/true), plus `_target_`."""
    fields = [("_target_", str, field(default="gptlab.model.GPTConfig"))]
    for f in dataclasses.fields(GPTConfig):
        kind = {tuple: list[int], int: int, float: float, str: str, str | None: str | None}.get(f.type, Any)
        default = field(default_factory=lambda d=f.default: list(d)) if kind == list[int] else field(default=f.default)
        fields.append((f.name, kind, default))
    return dataclasses.make_dataclass("ModelSchema", fields)


ModelSchema = _model_schema()


@dataclass
class PathsSchema:
    data_dir: str | None = None
    cache_dir: str | None = None
    output_dir: str | None = None


@dataclass
class TrainSchema:
    name: str = MISSING
    seed: int = 1337
    compile: Any = False
    seq_len_warmup: int = 0
    ckpt_path: str | None = None
    resume: Any = False
    final_limit_batches: Any = 1.0  # a number of batches (int) or a fraction (float): keys.py
    global_batch_tokens: int | None = None
    data: DataSchema = field(default_factory=DataSchema)
    model: ModelSchema = field(default_factory=ModelSchema)  # type: ignore[valid-type]
    paths: PathsSchema = field(default_factory=PathsSchema)
    optimizer: Any = None
    scheduler: Any = None
    trainer: Any = None
    logger: Any = None
    callbacks: Any = None


@dataclass
class ApplySchema:
    """What eval.py and generate.py share: the model to apply and where it runs."""

    ckpt_path: str | None = None
    init_from: str | None = None  # pretrained GPT-2 instead of a checkpoint
    device: str = "auto"
    precision: Any = "auto"  # a string (bf16-mixed) or a number (32)
    paths: PathsSchema = field(default_factory=PathsSchema)


@dataclass
class EvalSchema(ApplySchema):
    split: str = "both"
    stride: int | None = None
    batch_size: int = 32
    limit_windows: int | None = None
    documents: Any = False
    report: str | None = None
    data: DataSchema = field(default_factory=DataSchema)


@dataclass
class TaskSchema:
    name: str = MISSING
    template: str = MISSING
    metric: str = MISSING


@dataclass
class GenerateSchema(ApplySchema):
    prompt: str | None = None
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 1337
    num_samples: int = 1
    stop: str | None = None
    tokenizer: str | None = None
    task_file: str | None = None
    out_dir: str | None = None
    task: TaskSchema | None = None


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainSchema)
    cs.store(name="eval_schema", node=EvalSchema)
    cs.store(name="generate_schema", node=GenerateSchema)
