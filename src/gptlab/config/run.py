"""The keys of the three commands (train.py, eval.py, generate.py) and the rules between keys of different groups,
each rule next to the keys it relates. conf/train.yaml, eval.yaml and generate.yaml pick the groups and hold what
differs from the defaults declared here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gptlab.config.data import SPLITS, DataConfig
from gptlab.config.declare import (
    COUNT_MAX,
    Duration,
    Fraction,
    PathName,
    Refused,
    RunName,
    Tokenizer,
    check_fields,
    group,
    key,
    show,
)
from gptlab.config.model import GPTConfig
from gptlab.config.trainer import Precision, Trainer
from gptlab.errors import GptlabError

SIZE = dict(ge=1, le=COUNT_MAX)
SEED = dict(ge=0, le=2**32 - 1)
FigureFormat = Literal["png", "pdf", "svg"]  # what the figure commands (plot, scaling) can write


@dataclass(kw_only=True)
class Paths:
    data_dir: PathName | None = key(None, "holds wikitext-2/; conf/paths reads $GPTLAB_DATA_DIR; null: <repo>/data")
    cache_dir: PathName | None = key(None, "token caches; conf/paths reads $GPTLAB_CACHE_DIR; null: "
                                           "<repo>/.cache/gptlab")
    output_dir: str = key(help="this run's directory (Hydra's)")


@dataclass(kw_only=True)
class TrainConfig:
    name: RunName = key(help="the run's name: runs go to outputs/runs/<name>/<time>; resume=true finds them by it")
    seed: int = key(1337, "seeds the model's initialisation, the data order and every training step", **SEED)
    compile: bool = key(False, "torch.compile the model: pays on long runs and warm caches (docs/benchmarks.md)")
    ckpt_path: str | None = key(None, "continue training from this checkpoint")
    resume: bool = key("${gptlab_restarted:}", "continue the latest run named ${name} (its directory, last.ckpt "
                       "and W&B run); none yet: start one. Unset: true only in a job SLURM requeued or torchrun "
                       "restarted (SLURM_RESTART_COUNT, TORCHELASTIC_RESTART_COUNT > 0), false otherwise")
    run_time: Duration | None = key(None, "the whole command, from its start, ends by then: training ends early "
                                          "enough for the final validation and test too (callbacks.time_budget); "
                                          "null: no limit")
    final_limit_batches: int | Fraction = key(1.0, "batches (a whole number) or share (a fraction) of the final "
                                                   "validation and test; 1.0: the full splits", ge=1)
    global_batch_tokens: int | None = key(None, "tokens per optimizer step; set, accumulate_grad_batches = it / "
                                                "(block_size × data.batch_size × devices × num_nodes)", **SIZE)
    train_flops: float | None = key(None, "training compute: trainer.max_steps becomes the steps that train this "
                                          "many FLOPs (the model's flops_per_token × the tokens of a step); "
                                          "IsoFLOP sweeps, +sweep=scaling. null: trainer.max_steps", gt=0)
    paths: Paths = group(Paths, "where things are")
    data: DataConfig = group(DataConfig, "the data (conf/data/)")
    model: GPTConfig = group(GPTConfig, "the model (conf/model/)")
    trainer: Trainer = key(None, "lightning.Trainer's arguments (conf/trainer/)", open=True)
    optimizer: Any = key(None, "called with the parameter groups (conf/optimizer/)", open=True)
    scheduler: Any = key(None, "called with the optimizer: the learning rate by step (conf/scheduler/)", open=True)
    logger: Any = key(None, "{name: a Lightning logger} (conf/logger/)", open=True)
    callbacks: Any = key(None, "{name: a Lightning callback} (conf/callbacks/)", open=True)


@dataclass(kw_only=True)
class Apply:
    """What eval.py and generate.py share: the model to apply and where it runs."""

    ckpt_path: str | None = key(None, "the checkpoint, e.g. outputs/runs/<name>/<time>/checkpoints/last.ckpt")
    init_from: str | None = key(None, "or, without a checkpoint, pretrained GPT-2: gpt2, gpt2-medium, gpt2-large, "
                                      "gpt2-xl, or a Hugging Face directory")
    device: str = key("auto", "auto (cuda when there is one, else cpu), cpu, cuda or cuda:N")
    precision: Precision = key("auto", "as trainer.precision: auto is bf16-mixed where bf16 is fast, else 32-true")
    paths: Paths = group(Paths, "where things are")


@dataclass(kw_only=True)
class EvalConfig(Apply):
    split: Literal["valid", "test", "both", "train"] = key("both", "the split(s) to score")
    stride: int | None = key(None, "sliding window: each window scores its last `stride` tokens after up to "
                                   "block_size - stride of context; null: block_size (non-overlapping)", **SIZE)
    batch_size: int = key(32, "windows per forward pass", **SIZE)
    limit_windows: int | None = key(None, "score only the first N windows (documents=true: articles) of each "
                                          "split; null: the whole split", ge=1)
    documents: bool = key(False, "lm-eval's document-level wikitext method: each article alone, detokenised "
                                 "(needs data=wikitext2_raw)")
    report: str | None = key(None, "write the results here as JSON")
    data: DataConfig = group(DataConfig, "the data the model was trained on (conf/data/)")


@dataclass(kw_only=True)
class Task:
    name: str = key(help="the task's name")
    template: str = key(help="the prompt around each input: {input} marks where it goes")
    metric: Literal["squad", "rouge_l", "bleu"] = key(help="squad (exact match, F1), rouge_l (ROUGE-L F1) or bleu "
                                                           "(SacreBLEU)")

    def __post_init__(self):
        check_fields(self, "task.")
        if "{input}" not in self.template:
            raise Refused("task.template", self.template, "a template with an {input} slot")


@dataclass(kw_only=True)
class GenerateConfig(Apply):
    prompt: str | None = key(None, "the text to continue; null: one prompt per line from stdin")
    max_new_tokens: int = key(200, "tokens to generate per continuation", **SIZE)
    temperature: float = key(0.8, "0: greedy (always the most likely token)", ge=0)
    top_k: int | None = key(200, "sample among the k most likely tokens; null: all of them", **SIZE)
    top_p: float | None = key(None, "nucleus sampling: the fewest most likely tokens whose probability reaches "
                                    "top_p; null: off", gt=0, le=1)
    seed: int = key(1337, "seeds the sampling", **SEED)
    num_samples: int = key(1, "continuations per prompt", **SIZE)
    stop: str | None = key(None, "also stop at this string, left out of the output (the end-of-text token always "
                                 "stops)", blank=True)
    tokenizer: Tokenizer | None = key(None, "the tiktoken encoding; null: the training run's, else gpt2")
    task_file: str | None = key(None, "JSONL of {\"input\": ..., \"reference\": ...} records to score with the "
                                      "task's metric (needs task=...)")
    out_dir: str | None = key(None, "task scoring writes predictions.jsonl and scores.json here")
    task: Task | None = key(None, "a task's prompt template and metric (conf/task/: qa, summarize, translate)")


@dataclass(kw_only=True)
class ExportConfig:
    ckpt_path: str = key(help="the checkpoint to export (a model with the full output head)")
    out: str = key(help="the directory to write the Hugging Face GPT-2 into")
    overwrite: bool = key(False, "replace what `out` holds")


@dataclass(kw_only=True)
class PlotConfig:
    dir: str = key(help="a run directory (outputs/runs/<name>/<time>) or a multirun's (outputs/multiruns/<time>)")
    out: str = key("${dir}/plots", "the folder the figures are written into")
    format: FigureFormat = key("png", "the figures' file format (pdf and svg: vector, for a paper)")
    dpi: int = key(150, "dots per inch of a PNG", ge=50, le=1200)


@dataclass(kw_only=True)
class SweepConfig:
    dir: str = key(help="a multirun directory (outputs/multiruns/<time>)")
    csv: str | None = key(None, "where to write the table as CSV; null: <dir>/summary.csv")


@dataclass(kw_only=True)
class ScalingConfig:
    dir: str = key(help="a multirun directory of an IsoFLOP sweep (python train.py -m +sweep=scaling)")
    flops: float | None = key(None, "the compute budget (training FLOPs) to give the compute-optimal size for; null: "
                                    "10× the sweep's largest", gt=0)
    held_out: str | None = key(None, "a run directory outside the sweep: its final val loss against the fit's")
    bootstrap: int = key(200, "resamples of the runs for the fitted numbers' spread; 0: none", ge=0, le=100_000)
    seed: int = key(0, "seeds the resampling", **SEED)
    out: str = key("${dir}/plots", "the folder the figure (scaling.<format>) is written into")
    format: FigureFormat = key("png", "the figure's file format (pdf and svg: vector, for a paper)")


# --- rules between groups


def train_rules(get) -> list[str]:
    """The rules of a training config that relate keys of different groups; `get(key)` reads a resolved value.
    Raises the first refusal; returns the warnings (valid but odd values)."""
    data_block, model_block = get("data.block_size"), get("model.block_size")
    if data_block is None:
        raise GptlabError("data.block_size=null: expected a whole number ≥ 1; leave it at its default "
                          "(${model.block_size})")
    check_data_fits_model(data_block, model_block)
    missing = [s for s in SPLITS if s not in get("data.splits")]
    if missing:
        raise GptlabError(f"data.splits={show(list(get('data.splits')))}: training needs train, valid and test "
                          f"(missing: {', '.join(missing)})")
    for kind in ("callbacks", "logger"):
        for name, node in (get(kind) or {}).items():
            if node is not None and not (isinstance(node, dict) and "_target_" in node):
                raise GptlabError(f"{kind}.{name}={show(node)}: expected a component's config (its _target_ and "
                                  f"arguments), or null to switch it off")
    strategy = get("trainer.strategy")
    strategy = strategy.get("_target_", "") if isinstance(strategy, dict) else strategy
    if str(get("optimizer._target_")).endswith("MuonAdamW") and "fsdp" in str(strategy).lower():
        raise GptlabError("optimizer=muon with trainer=fsdp: Muon orthogonalises whole matrices and FSDP shards "
                          "them; add optimizer=adamw")
    if get("train_flops") is not None and not get("callbacks.flop_budget"):
        raise GptlabError(f"train_flops={get('train_flops'):g} needs callbacks.flop_budget, which turns it into "
                          f"steps (it is null here)")
    tokens = get("global_batch_tokens")
    if tokens is not None:
        if get("trainer.accumulate_grad_batches") not in (None, 1):
            raise GptlabError("set global_batch_tokens or trainer.accumulate_grad_batches, not both")
        accumulation(tokens, data_block, get("data.batch_size"),
                     process_count(get("trainer.devices"), get("trainer.num_nodes")))
    warnings = []
    # train_flops decides the steps once the model is built: the warnings about the run's length wait for it
    max_steps = get("trainer.max_steps") if get("train_flops") is None else None
    total = get("scheduler.total_steps") if max_steps is not None and get("scheduler.total_steps") is not None \
        else max_steps
    warmup = get("scheduler.warmup_steps")
    if warmup is not None and total is not None and total > 0 and warmup >= total:
        warnings.append(f"scheduler.warmup_steps={warmup} is not shorter than the run ({total} steps): the learning "
                        f"rate never reaches optimizer.lr")
    if get("optimizer.lr") == 0:
        warnings.append("optimizer.lr=0: the weights will not change")
    max_time, run_time = get("trainer.max_time"), get("run_time")
    if get("callbacks.time_budget") and max_time and run_time and Duration.seconds(max_time) >= Duration.seconds(
            run_time):
        warnings.append(f"trainer.max_time={show(max_time)} is not shorter than run_time="
                        f"{show(run_time)}, which ends the whole run first; set run_time=null "
                        f"to train for trainer.max_time")
    interval = get("trainer.val_check_interval")
    if isinstance(interval, int) and not isinstance(interval, bool) and max_steps and 0 < max_steps < interval:
        warnings.append(f"trainer.val_check_interval={interval} is longer than the run (trainer.max_steps="
                        f"{max_steps}): no validation until the end")
    return warnings


def eval_rules(get) -> list[str]:
    stride, block = get("stride"), get("data.block_size")
    if stride is not None and block is not None and stride > block:
        raise GptlabError(f"stride={stride}: expected at most data.block_size={block}")
    if get("documents") and get("data.variant") != "raw":
        raise GptlabError("documents=true scores whole articles of the raw text: add data=wikitext2_raw")
    return apply_rules(get)


def generate_rules(get) -> list[str]:
    if get("task_file") and get("task") is None:
        raise GptlabError("task_file needs a task to score: task=qa, task=summarize or task=translate")
    return apply_rules(get)


def apply_rules(get) -> list[str]:
    if get("ckpt_path") and get("init_from"):
        raise GptlabError("give ckpt_path (a trained checkpoint) or init_from (pretrained GPT-2), not both")
    return []


def accumulation(global_batch_tokens: int, block_size: int, batch_size: int, processes: int | None) -> int:
    """Micro-batches each process accumulates so that one optimizer step sees `global_batch_tokens` tokens.
    processes None (trainer.devices=auto, before the Trainer counts them): only block_size × batch_size is
    checked."""
    per_pass = block_size * batch_size * (processes or 1)
    if global_batch_tokens % per_pass:
        what = "block_size × data.batch_size" + (" × processes" if processes is not None else "")
        numbers = f"{block_size} × {batch_size}" + (f" × {processes}" if processes is not None else "")
        raise GptlabError(f"global_batch_tokens={global_batch_tokens}: expected a multiple of {what} = {numbers} = "
                          f"{per_pass}: change global_batch_tokens, data.batch_size or trainer.devices")
    return global_batch_tokens // per_pass


def check_data_fits_model(data_block_size: int, model_block_size: int) -> None:
    """Windows no longer than the model's context (train.py before building, eval.py once the model is loaded)."""
    if data_block_size > model_block_size:
        raise GptlabError(f"data.block_size={data_block_size} is larger than model.block_size={model_block_size}: "
                          f"the model has no positions past {model_block_size}. Leave data.block_size at its "
                          f"default (${{model.block_size}})")


def process_count(devices, nodes) -> int | None:
    """Processes a run starts: trainer.devices × trainer.num_nodes; None where devices is auto or -1 (the machine
    decides: known only once the Trainer is built)."""
    if isinstance(devices, bool):
        count = None
    elif isinstance(devices, int):
        count = devices if devices > 0 else None
    elif isinstance(devices, (list, tuple)):
        count = len(devices)
    elif isinstance(devices, str) and devices.strip() not in ("auto", "-1", ""):
        parts = [p for p in devices.split(",") if p.strip()]
        count = int(parts[0]) if len(parts) == 1 and parts[0].strip().isdigit() else len(parts)
    else:
        count = None
    return None if count is None else count * int(nodes or 1)


def configuration(overrides) -> list[str]:
    """What a job's overrides say of its configuration: all but its seed. The jobs of a multirun over `seed` that
    share it are repeats of one configuration (the sweep table's mean ± std, one W&B group)."""
    return [str(o) for o in overrides if str(o).partition("=")[0].lstrip("+~") != "seed"]


def no_rules(get) -> list[str]:
    return []


# every command: its declaration (conf/<command>.yaml composes into it) and its rules between groups
APPS = {"train": (TrainConfig, train_rules), "eval": (EvalConfig, eval_rules),
        "generate": (GenerateConfig, generate_rules), "export": (ExportConfig, no_rules),
        "plot": (PlotConfig, no_rules), "sweep": (SweepConfig, no_rules), "scaling": (ScalingConfig, no_rules)}
