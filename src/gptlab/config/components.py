"""The keys of gptlab's own components: the objects a config builds by `_target_` (callbacks, the Muon optimizer, the
learning-rate schedules, the W&B logger). Each declaration has the name of its class; the class is built from it
(a callback or schedule subclasses it, the optimizer and logger make it from their arguments), so its values are
checked when it is made, and before anything runs when it comes from a config. Their values are in the config
groups (conf/callbacks/default.yaml, conf/optimizer/muon.yaml, ...), so no key here has a default of its own.

Components of other libraries (Lightning's ModelCheckpoint, torch.optim.AdamW, ...) are not declared here: they
check their own arguments when they are built."""

from dataclasses import dataclass
from typing import Literal

from gptlab.config.declare import COUNT_MAX, Duration, Fraction, PathName, Tokenizer, check_fields, key

SIZE = dict(ge=1, le=COUNT_MAX)


def _check(obj):
    check_fields(obj)


# --- callbacks (conf/callbacks/default.yaml)


@dataclass(eq=False, kw_only=True)
class Throughput:
    window: int = key(help="steps per logged perf/tokens_per_sec", **SIZE)
    skip: int = key(help="first steps (start-up, compilation) left out of the run's average", ge=0, le=COUNT_MAX)
    peak_flops: float | Literal["auto"] | None = key(
        help="peak FLOP/s of one device, for perf/mfu: auto = datasheet for known GPUs, on CPUs the best matmul "
             "FLOP/s measured on this machine (kept in cache_dir); null: no MFU", gt=0)
    cache_dir: PathName | None = key(help="where the CPU's measured peak is kept; null: <repo>/.cache/gptlab")

    __post_init__ = _check


@dataclass(eq=False, kw_only=True)
class SampleText:
    prompts: list[str] = key(help="continued at each validation, to samples.txt and a W&B table \"samples\"")
    max_new_tokens: int = key(help="tokens per sample", **SIZE)
    temperature: float = key(help="0: greedy; else sampled with `seed`", ge=0)
    top_k: int | None = key(help="sample among the k most likely tokens; null: all", **SIZE)
    seed: int = key(help="seeds the sampling", ge=0, le=2**32 - 1)
    path: str | None = key(help="the text file the samples are appended to; null: <run dir>/samples.txt")
    tokenizer: Tokenizer = key(help="used when the trainer has no data module")

    __post_init__ = _check


@dataclass(eq=False, kw_only=True)
class ResumeCheckpoint:
    dirpath: str = key(help="where last.ckpt is kept, to resume from (resume=true)")
    every_n_train_steps: int | None = key(help="save every N optimizer steps; null: not by steps", **SIZE)
    every_n_minutes: float | None = key(help="save every N minutes of training; null: not by time", gt=0)

    __post_init__ = _check


@dataclass(eq=False, kw_only=True)
class TimeBudget:
    max_time: Duration | None = key(help="training (and its validations) ends by then: trainer.max_time; null: "
                                         "no limit")
    run_time: Duration | None = key(help="the whole command, from its start, ends by then: training ends early "
                                         "enough for the final validation and test too; null: no limit")
    final_batches: int | Fraction = key(help="how much of each split the final validation and test score "
                                             "(final_limit_batches): a number of batches or a share", ge=1)
    skip_steps: int = key(help="start-up steps left out of the timing", ge=0, le=COUNT_MAX)
    measure_steps: int = key(help="training steps per measurement of their speed (fewer when they take over 2% "
                                  "of the budget): the plan is revised after each", **SIZE)
    reserve: float = key(help="share of the time left kept back for steps that slow down", ge=0, le=0.9)

    __post_init__ = _check


@dataclass(eq=False, kw_only=True)
class FlopBudget:
    flops: float | None = key(help="training ends at the step where the model has trained this many FLOPs "
                                    "(train_flops); null: at trainer.max_steps", gt=0)

    __post_init__ = _check


@dataclass(eq=False, kw_only=True)
class StepSeed:
    seed: int = key(help="seeds each training batch from (seed, epoch, batch): a resumed run draws the same "
                         "dropout masks", ge=0, le=2**32 - 1)

    __post_init__ = _check


@dataclass(eq=False, kw_only=True)
class NanGuard:
    action: Literal["stop", "skip"] = key(help="on a NaN or Inf training loss: stop with an error naming the step "
                                               "(no bad update, no bad checkpoint), or skip that update")
    inject_at_step: int | None = key(help="for tests: turn the loss of this step (1-based) into NaN", **SIZE)

    __post_init__ = _check


# --- optimizer (conf/optimizer/muon.yaml)


@dataclass(eq=False, kw_only=True)
class MuonAdamW:
    lr: float = key(help="Muon's learning rate, for the blocks' matrices", ge=0)
    momentum: float = key(help="Muon's momentum", ge=0, lt=1)
    nesterov: bool = key(help="Nesterov momentum")
    weight_decay: float = key(help="Muon's decoupled weight decay", ge=0)
    adamw_lr: float = key(help="AdamW's learning rate, for everything else (embeddings, output layer, biases, "
                               "norms)", ge=0)
    adamw_betas: tuple[float, float] = key(help="AdamW's betas", ge=0, lt=1)
    adamw_weight_decay: float = key(help="AdamW's weight decay", ge=0)
    adjust_lr_fn: Literal["original", "match_rms_adamw"] | None = key(
        help="null or original: Muon's own scaling; match_rms_adamw: makes lr comparable to AdamW's")
    ns_dtype: Literal["auto", "bf16", "fp32"] = key(
        help="the Newton-Schulz dtype: auto is bf16 on GPUs and bf16 CPUs, fp32 where bf16 is emulated")
    fused: bool | None = key(help="the fused AdamW kernel for the non-matrix parameters")

    __post_init__ = _check


# --- learning-rate schedules (conf/scheduler/)


@dataclass(eq=False, kw_only=True)
class Cosine:
    total_steps: int = key(help="the step where the decay ends (trainer.max_steps; a time budget moves it)", ge=1)
    warmup_steps: int = key(help="linear warmup from 0 (at most half the run)", ge=0)
    min_lr_ratio: float = key(help="the learning rate at the end, as a share of the peak", ge=0, le=1)

    __post_init__ = _check


@dataclass(eq=False, kw_only=True)
class Linear(Cosine):
    pass


@dataclass(eq=False, kw_only=True)
class WSD(Cosine):
    decay_fraction: float = key(help="the share of the run, at its end, over which the learning rate decays "
                                     "linearly; before it, after the warmup, it stays at its peak", gt=0, le=1)


@dataclass(eq=False, kw_only=True)
class Constant:
    warmup_steps: int = key(help="linear warmup from 0, then the base learning rate", ge=0)

    __post_init__ = _check


# --- logger (conf/logger/wandb.yaml)


@dataclass(eq=False, kw_only=True)
class WandbLogger:
    project: str = key(help="the W&B project")
    name: str | None = key(help="the run's name; in a multirun each job is named after its swept keys instead")
    group: str | None = key(help="null: in a multirun, the sweep (its directory's name; in a sweep over seed, "
                                 "and the job's configuration)")
    tags: list[str] | None = key(help="tags of the run", empty=True)
    save_dir: str = key(help="runs are kept under <save_dir>/wandb/")
    offline: bool | None = key(help="null: offline unless an API key is configured (WANDB_MODE, when set, "
                                    "decides); true/false force it")
    log_model: bool | Literal["all"] = key(help="true: the checkpoints as artifacts at the end of training; all: "
                                                "each one as it is written")
    watch: Literal["gradients", "parameters", "all"] | None = key(help="histograms of these every watch_log_freq "
                                                                       "steps; null: none")
    watch_log_freq: int = key(help="steps between histograms", **SIZE)
    id: str | None = key(help="a run id to continue (with resume)")
    resume: Literal["allow", "must", "never", "auto"] | None = key(help="wandb.init's resume")

    __post_init__ = _check
