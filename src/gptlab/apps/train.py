"""`python train.py`: check the config, build data, model, callbacks, loggers and trainer from it, fit, then validate
and test the best checkpoint on the full splits.

The checks come first, cheapest first: the config (gptlab/config: no torch), then the machine (torch: devices,
precision, GPT-2 weights), then every component built from the config, whose own library checks its arguments
(before any data is loaded). torch and lightning are imported only after the config has passed, so a refused
command answers in about a second.
"""

import logging
import math
import sys
import time
import warnings
from pathlib import Path

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from gptlab.apps.results.result import write_result
from gptlab.apps.runtime.multirun import hydra_job
from gptlab.config.cli import describe, refused_by
from gptlab.config.declare import Duration, signature_refusal
from gptlab.config.run import process_count
from gptlab.config.rundir import is_checkpoint
from gptlab.config.validate import declaration_of, validate
from gptlab.errors import GptlabError

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> float:
    """Train and evaluate; returns the validation perplexity (the value a sweeper minimises). The W&B run is
    closed after every job, also a failed one. In a multirun a failed job is recorded in its result.json and
    returns inf, so the other jobs still run; the Sweep callback (runtime/multirun.py) lists every job at the end
    and exits non-zero. inf, not a failed Optuna trial: TPE learns that a diverging learning rate is a bad one, and
    a study whose every trial failed ends with the table, not with the plugin's "No trials are completed yet".
    A single run raises."""
    failed = True
    try:
        check(cfg)
        job = prepare(cfg)
        value = train_and_evaluate(cfg, *job) if job else job_in_own_process()
        failed = False
        return value
    except Exception as e:
        job = hydra_job()
        # a single run refused for its input writes nothing (the entry point then removes what Hydra wrote)
        if job["output_dir"] and not _other_rank() and (job["sweep_dir"] is not None or describe(e) is None):
            write_result(job["output_dir"], "failed", overrides=job["overrides"], error=f"{type(e).__name__}: {e}")
        if job["sweep_dir"] is None:
            raise
        log_failed_job(job, e)
        return math.inf
    finally:
        if "wandb" in sys.modules:  # a W&B run may be open: close it, marked failed after an error
            from gptlab.apps.runtime.wandb import finish_wandb

            finish_wandb(failed)


def log_failed_job(job: dict, error: Exception) -> None:
    """A failed job of a multirun: one line on the console, naming its log; the traceback in that log only (a bug's
    traceback in the middle of the sweep's output would bury the table; a user's mistake needs none)."""
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    where = f"; its traceback: {files[0].baseFilename}" if files and describe(error) is None else ""
    log.error("job failed: %s (%s: %s%s)", " ".join(job["overrides"]), type(error).__name__,
              str(error).splitlines()[0] if str(error) else "", where)
    if where:
        record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "traceback of the job above", (),
                                sys.exc_info())
        for handler in files:
            handler.handle(record)


def check(cfg: DictConfig) -> None:
    """Everything that can be checked before a component is built: the config's keys and rules (no torch), then
    what the machine provides (torch, no lightning)."""
    validate(cfg, "train")
    from gptlab.model.precision import check_trainer_machine

    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    check_trainer_machine(trainer.get("accelerator", "auto"), trainer.get("devices", "auto"),
                          trainer.get("precision", "auto"))
    if int(trainer.get("num_nodes") or 1) > 1:
        from gptlab.apps.runtime.distributed import ranks_started_outside

        if not ranks_started_outside():  # Lightning would start this node's processes and wait for the others
            raise GptlabError(f"trainer.num_nodes={trainer['num_nodes']}, but nothing started this run on several "
                              f"nodes: it would wait for the other nodes forever. Start it on each node with "
                              f"torchrun or srun (README: Scaling out), or set trainer.num_nodes=1")
    from gptlab.data.tokenizer import Tokenizer

    config = model_config(cfg, Tokenizer(cfg.data.tokenizer, cfg.data.data_dir).vocab_size)  # as build() has it
    if cfg.model.get("init_from"):  # GPT-2 weights: found (or downloaded) and of the model's sizes, now
        from gptlab.model.hf import check as check_pretrained

        check_pretrained(cfg.model.init_from, config, "model.init_from")
    check_resources(cfg, trainer, config)


def check_resources(cfg: DictConfig, trainer: dict, config) -> None:
    """Before any of it is allocated: the training memory the model takes (its estimate refused in one line when
    the device has not that much free), and a warning when its steps are far too slow for the run's budget."""
    from gptlab.model.memory import GIB, free_bytes, training_cost
    from gptlab.model.precision import resolve_precision, trainer_device

    device = trainer_device(trainer.get("accelerator", "auto"))
    precision = resolve_precision(trainer.get("precision", "auto"), trainer.get("accelerator", "auto"))
    processes = process_count(trainer.get("devices", "auto"), 1) or 1
    shards = processes * int(trainer.get("num_nodes") or 1) if "fsdp" in str(trainer.get("strategy")) else 1
    batch = int(cfg.data.batch_size)
    cost = training_cost(config, batch, 4 if precision.startswith(("32", "64")) else 2, shards)
    on_machine = cost.bytes * (processes if device.type == "cpu" else 1)  # CPU processes share one memory
    free = free_bytes(device)
    if free is not None and on_machine > free:
        where = "this GPU has" if device.type == "cuda" else "this machine has"
        each = f" × {processes} processes" if device.type == "cpu" and processes > 1 else ""
        raise GptlabError(
            f"model: training it takes about {on_machine / GIB:,.1f} GiB and {where} {free / GIB:,.1f} GiB free "
            f"({cost.params / 1e6:,.0f}M parameters: {cost.state_bytes / GIB:,.1f} GiB of weights, gradients and "
            f"optimizer state; {cost.activation_bytes / GIB:,.1f} GiB of activations at data.batch_size={batch} × "
            f"model.block_size={config.block_size}{each}). Use a smaller model or data.batch_size, or trainer=fsdp")
    tokens = batch * config.block_size * int(trainer.get("accumulate_grad_batches") or 1)
    steps = int(trainer.get("max_steps") or 0) if cfg.get("train_flops") is None else \
        round(cfg.train_flops / (cost.flops_per_token * tokens))  # about FlopBudget's (training/budget.py)
    if steps <= 0 or cost.flops_per_token * tokens * steps < 1e15:  # minutes at most anywhere: not worth a look
        return
    from gptlab.training.flops import peak_flops

    peak, _ = peak_flops(device, precision, cfg.paths.get("cache_dir"))
    # the sooner of the two deadlines (trainer.max_time, the whole command's run_time) ends the run
    budget = min((s for s in (Duration.seconds(trainer.get("max_time")), Duration.seconds(cfg.get("run_time")))
                  if s), default=None)
    if not peak:
        return
    per_step = cost.flops_per_token * tokens / (0.3 * peak)  # 30% of the peak: what the best runs here reach
    fit = (budget or 24 * 3600) / per_step
    if fit < steps / 10:
        where = f"only ~{int(fit)} of its {steps} steps fit in its time budget" if budget else \
            f"its {steps} steps take ~{per_step * steps / 3600:,.0f} hours"
        log.warning("model (%s M parameters): about %s s a training step on this machine (at 30%% of its peak "
                    "FLOP/s); %s", f"{cost.params / 1e6:,.0f}", f"{per_step:,.1f}", where)


def prepare(cfg: DictConfig):
    """Build the run (data module, LightningModule, Trainer), or None for a multirun job that starts its ranks in
    a process of its own (runtime/distributed.py)."""
    from gptlab.apps.runtime import distributed, resume

    if distributed.job_needs_own_process(cfg):
        return None
    resume.prepare(cfg)  # resume=true: ckpt_path = this run's last.ckpt; the W&B run id
    dm, module, trainer = build(cfg)
    resume.keep_wandb_id(cfg)
    return dm, module, trainer


def job_in_own_process() -> float:
    from gptlab.apps.runtime.distributed import run_job_in_own_process

    return run_job_in_own_process()


def model_config(cfg: DictConfig, vocab_size: int):
    """The model's config (a GPTConfig, by `_target_`) with the tokenizer's vocabulary."""
    return component(cfg.model, "model", vocab_size=vocab_size)


def build(cfg: DictConfig):
    """Data module, LightningModule, Trainer, built from config; nothing runs and no data is read yet."""
    import lightning as L
    import torch

    from gptlab.apps.runtime import distributed
    from gptlab.model.checkpoint import check_compatible
    from gptlab.training.module import GPTLitModule, param_groups

    if logging.getLogger().hasHandlers():  # Hydra's log handlers (console, train.log) already print every record:
        logging.getLogger("lightning").handlers.clear()  # not Lightning's own console handler a second time
    quiet_libraries()
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    dm = component(cfg.data, "data")
    model = model_config(cfg, dm.vocab_size)  # the tokenizer decides the vocabulary
    module = GPTLitModule(model=model, optimizer=cfg.optimizer, scheduler=cfg.get("scheduler"), compile=cfg.compile)
    if cfg.get("ckpt_path"):
        check_compatible(cfg.ckpt_path, model, cfg.optimizer.get("_target_"))
    trainer = build_trainer(cfg, param_groups(module.model, module.param_dims))
    distributed.configure_batch(cfg, dm, trainer)  # global_batch_tokens -> gradient accumulation
    distributed.check_cpu_processes(trainer)
    return dm, module, trainer


def quiet_libraries() -> None:
    """Leave out what other libraries print at every start that tells a gptlab user nothing: Lightning's
    advertisements for its cloud products ("💡 Tip: ..."), and torch's deprecations of classes Lightning still uses
    internally."""
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoAdvertisement) for f in rank_zero.filters):
        rank_zero.addFilter(_NoAdvertisement())
    warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
    # FSDP's sharded checkpoints (Lightning's, through torch's own state-dict code)
    warnings.filterwarnings("ignore", "Please use DTensor instead and we are deprecating ShardedTensor", FutureWarning)


class _NoAdvertisement(logging.Filter):
    def filter(self, record):
        return not str(record.msg).startswith("💡 Tip")


def build_trainer(cfg: DictConfig, parameter_groups):
    """The Trainer with its callbacks and loggers; and the optimizer and schedule, tried on `parameter_groups`, so
    that they refuse bad values now, before the data is loaded. Each component's library checks the arguments the
    config gives it: a refusal is one line naming the config node."""
    from lightning.pytorch.callbacks import ProgressBar

    from gptlab.model.precision import resolve_precision
    from gptlab.training.checkpoint_io import SafeCheckpointIO

    optimizer = component(cfg.optimizer, "optimizer")
    with refused_by("optimizer", _library_errors()):
        optimizer = optimizer(parameter_groups)
    if cfg.get("scheduler"):
        schedule = component(cfg.scheduler, "scheduler")
        with refused_by("scheduler", _library_errors()):
            schedule(optimizer)
    callbacks = [component(c, f"callbacks.{name}") for name, c in (cfg.get("callbacks") or {}).items()
                 if c and "_target_" in c]
    loggers = [component(c, f"logger.{name}") for name, c in (cfg.get("logger") or {}).items()
               if c and "_target_" in c]
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    if "enable_progress_bar" not in trainer_cfg and not any(isinstance(c, ProgressBar) for c in callbacks):
        trainer_cfg["enable_progress_bar"] = False  # callbacks.progress_bar=null: no bar, not Lightning's default one
    trainer_cfg["precision"] = resolve_precision(trainer_cfg.get("precision", "auto"),
                                                 trainer_cfg.get("accelerator", "auto"))
    # SafeCheckpointIO: checkpoints read weights-only and written atomically
    return component(OmegaConf.create(trainer_cfg), "trainer", callbacks=callbacks, logger=loggers or False,
                     plugins=[SafeCheckpointIO()])


def _library_errors() -> tuple:
    """Besides ValueError and TypeError, the exception with which Lightning refuses a setting."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    return (ValueError, TypeError, MisconfigurationException)


def component(node: DictConfig, key: str, **kwargs):
    """The object config node `key` describes (its `_target_` called with its other keys). gptlab's own components
    were checked against their declarations already; another library's are checked against its signature's
    types here, and its constructor checks the rest: a refusal either way is one line naming the node."""
    target = node.get("_target_")
    values = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if not k.startswith("_")}
    if declaration_of(target) is None:
        with refused_by(key, _library_errors()):
            refused = signature_refusal(get_object(target), values, key)
        if refused is not None:
            raise refused
    with refused_by(key, _library_errors()):  # plain lists and dicts, not OmegaConf's; objects passed as they are
        return instantiate(node, _convert_="all", _partial_=bool(kwargs))(**kwargs) if kwargs else \
            instantiate(node, _convert_="all")


def train_and_evaluate(cfg: DictConfig, dm, module, trainer) -> float:
    """Fit, then validate and test; writes <output_dir>/result.json; returns the validation perplexity."""
    t0 = time.time()
    from gptlab.apps.runtime.wandb import log_config_to_wandb
    from gptlab.training.budget import tokens_per_step
    from gptlab.training.sharding import evaluation_module

    config = ran_config(cfg, trainer)
    log_config_to_wandb(trainer, config)
    # counted before FSDP shards them; with the FLOPs a token as trained, what a scaling fit reads of the run
    size = {"params": module.model.num_params(), "block_params": module.model.num_block_params()}
    trainer.fit(module, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))

    # Final scores on the full splits, from the best checkpoint when one was written.
    ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    ckpt = ckpt or None
    if not trainer.fast_dev_run:
        trainer.limit_val_batches = trainer.limit_test_batches = cfg.get("final_limit_batches", 1.0)
        announce_final(cfg, trainer)
    # under FSDP each stage gets an unsharded copy of the module (training/sharding.py)
    val = trainer.validate(evaluation_module(module, trainer, ckpt), datamodule=dm, ckpt_path=ckpt, verbose=False)[0]
    test = trainer.test(evaluation_module(module, trainer, ckpt), datamodule=dm, ckpt_path=ckpt, verbose=False)[0]
    record_schedule_end(module, trainer)  # after validate and test, which log the hyper-parameters of the start
    if trainer.is_global_zero:
        meter = throughput(trainer)
        print_summary(cfg, module, size["params"], trainer, val, test, ckpt, time.time() - t0)
        write_result(cfg.paths.output_dir, "completed", {**val, **test}, overrides=hydra_job()["overrides"],
                     steps=trainer.global_step, seconds=time.time() - t0, precision=trainer.precision,
                     config=config, train_tokens=trainer.global_step * tokens_per_step(trainer),
                     flops_per_token=module.flops_per_token, **size,
                     **{"perf/tokens_per_sec": meter.tokens_per_sec if meter else None})
    return val.get("val/ppl", float("nan"))


def record_schedule_end(module, trainer) -> None:
    """The hyper-parameters the loggers keep (hparams.yaml, W&B's config) say the step the schedule ended at: a time
    budget re-plans it (and trainer.max_steps with it) from the trainer.max_steps the config gave."""
    schedule = module.hparams.get("scheduler")
    if isinstance(schedule, dict) and schedule.get("total_steps") not in (None, trainer.max_steps):
        schedule["total_steps"] = trainer.max_steps
        for logger in trainer.loggers:
            logger.log_hyperparams(module.hparams)


def announce_final(cfg, trainer) -> None:
    """The final scores can take longer than a short run's training (the full splits through the output head):
    say how long, from this run's validations, before they start."""
    from gptlab.training.budget import TimeBudget
    from gptlab.training.callbacks import clock_text

    budget = next((cb for cb in trainer.callbacks if isinstance(cb, TimeBudget)), None)
    if budget is not None and trainer.is_global_zero and trainer.global_step > 0:
        log.info("final validation and test over final_limit_batches=%s of each split: about %s",
                 cfg.get("final_limit_batches", 1.0), clock_text(budget.final_seconds(trainer)))


def ran_config(cfg: DictConfig, trainer) -> dict:
    """The config as it runs: resolved (.hydra/config.yaml keeps the interpolations, for a resume), with the
    precision `auto` chose. W&B's run config and result.json's `config`, which the model card of an export shows."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config["trainer"]["precision"] = trainer.precision
    return config


def throughput(trainer):
    from gptlab.training.callbacks import Throughput

    return next((cb for cb in trainer.callbacks if isinstance(cb, Throughput)), None)


def _other_rank() -> bool:
    """True in a DDP rank other than 0 (they write no result)."""
    if "lightning" not in sys.modules:
        return False
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return rank_zero_only.rank != 0


def print_summary(cfg, module, params, trainer, val, test, ckpt, seconds):
    c = module.model.config
    meter = throughput(trainer)
    tput, mfu = (meter.tokens_per_sec, meter.mfu) if meter else (None, None)
    lines = [
        f"model      {c.n_layer} layers × {c.n_embd} wide, {c.n_head} heads, block {c.block_size}: "
        f"{params / 1e6:.2f}M parameters",
        f"training   {trainer.global_step} steps, precision {trainer.precision}, "
        + (f"{tput:,.0f} tokens/s" if tput else "tokens/s n/a") + (f", MFU {100 * mfu:.1f}%" if mfu else "")
        + f", {seconds / 60:.1f} min in all",
    ]
    if mfu:
        lines.append(f"MFU peak   {meter.peak / 1e9:,.0f} GFLOP/s per device: {meter.peak_source}")
    for name, m in (("val", val), ("test", test)):
        if f"{name}/ppl" in m:
            lines.append(f"{name:<10} ppl {m[f'{name}/ppl']:.2f}   loss {m[f'{name}/loss']:.4f}   "
                         f"word ppl {m.get(f'{name}/word_ppl', float('nan')):.2f}   "
                         f"bits/byte {m.get(f'{name}/bpb', float('nan')):.4f}   acc {m[f'{name}/acc']:.4f}   "
                         f"over {int(m[f'{name}/tokens']):,} tokens")
    lines.append(f"checkpoint {ckpt or '(none written)'}")
    lines.append(f"outputs    {cfg.paths.output_dir}")
    lines += next_commands(cfg.paths.output_dir, ckpt, full_head=c.head == "full")
    print("\n".join(["", "gptlab summary", *("  " + line for line in lines)]), flush=True)


def next_commands(output_dir, ckpt, full_head: bool) -> list[str]:
    """What a user does with a finished run, as commands to paste (a W&B run's sync command follows, from
    finish_wandb)."""
    last = Path(output_dir) / "checkpoints" / "last.ckpt"
    ckpt = ckpt or (str(last) if is_checkpoint(last) else None)
    commands = [f"python -m gptlab.apps.plot dir={output_dir}"]
    if ckpt:
        commands[:0] = [f"python generate.py ckpt_path={ckpt} prompt='The history of'",
                        f"python eval.py ckpt_path={ckpt}"]
        if full_head:  # Hugging Face's GPT-2 has one output matrix: the adaptive head has no counterpart there
            commands.append(f"python -m gptlab.apps.export ckpt_path={ckpt} out={output_dir}/hf")
    return [f"{'next' if i == 0 else '':<10} {command}" for i, command in enumerate(commands)]
