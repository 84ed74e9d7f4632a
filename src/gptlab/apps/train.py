"""`python train.py`: build data, model, callbacks, loggers and trainer from the Hydra config; fit, then validate
and test the best checkpoint on the full splits."""

import logging
import time

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from gptlab.apps import checks, distributed, resume
from gptlab.apps.setup import setup
from gptlab.apps.sweep import hydra_job, write_result
from gptlab.apps.validate import validate
from gptlab.apps.wandb_logger import finish_wandb, log_config_to_wandb
from gptlab.training.callbacks import Throughput
from gptlab.training.checkpoint import check_compatible
from gptlab.training.checkpoint_io import SafeCheckpointIO
from gptlab.training.module import GPTLitModule
from gptlab.training.precision import resolve_precision

log = logging.getLogger(__name__)


def build(cfg: DictConfig):
    """Data module, LightningModule, Trainer, built from config; nothing runs yet."""
    dm = instantiate(cfg.data)
    model_cfg = instantiate(cfg.model, _convert_="all")
    model_cfg.vocab_size = dm.vocab_size  # the tokenizer decides
    module = GPTLitModule(model=model_cfg, optimizer=cfg.optimizer, scheduler=cfg.get("scheduler"),
                          compile=cfg.get("compile", False), seq_len_warmup=cfg.get("seq_len_warmup", 0))
    checks.check_optimizer(module)
    if cfg.get("ckpt_path"):
        check_compatible(cfg.ckpt_path, module.hparams["model"], module.hparams["optimizer"])
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c and "_target_" in c]
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg["precision"] = resolve_precision(trainer_cfg.get("precision", "auto"),
                                                 trainer_cfg.get("accelerator", "auto"))
    # SafeCheckpointIO: checkpoints read weights-only and written atomically
    trainer = instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False, plugins=[SafeCheckpointIO()])
    distributed.configure_batch(cfg, dm, trainer)  # global_batch_tokens -> gradient accumulation
    distributed.check_cpu_processes(trainer)
    return dm, module, trainer


def run(cfg: DictConfig) -> float | None:
    """Train and evaluate; returns the validation perplexity (the value a sweeper minimises). The W&B run is
    closed after every job, also a failed one. In a multirun a failed job is recorded in its result.json and
    returns None (an Optuna trial counts as failed), so the other jobs still run; the Sweep callback
    (hydra_callbacks.py) lists every job at the end and exits non-zero. A single run raises."""
    setup()  # idempotent; for jobs started by a launcher that did not go through train.py
    single = hydra_job()["sweep_dir"] is None
    if single:  # refused before anything is written (clear_errors removes what Hydra wrote)
        check(cfg)
    failed = True
    try:
        value = train_and_evaluate(cfg, checked=single)
        failed = False
        return value
    except Exception as e:
        job = hydra_job()
        if job["output_dir"] and rank_zero_only.rank == 0:
            write_result(job["output_dir"], "failed", overrides=job["overrides"], error=f"{type(e).__name__}: {e}")
        if job["sweep_dir"] is None:
            raise
        log.exception("job failed: %s", " ".join(job["overrides"]))
        return None
    finally:
        finish_wandb(failed)


def check(cfg: DictConfig) -> None:
    validate(cfg, "train")  # every key's type and range, rules across keys, the machine (validate.py)


def train_and_evaluate(cfg: DictConfig, checked: bool = False) -> float:
    """Fit, then validate and test; writes <output_dir>/result.json; returns the validation perplexity."""
    if not checked:
        check(cfg)
    if distributed.job_needs_own_process(cfg):  # a multirun job with several ranks: see distributed.py
        return distributed.run_job_in_own_process()
    resume.prepare(cfg)  # resume=true: ckpt_path = this run's last.ckpt; the W&B run id
    t0 = time.time()
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    dm, module, trainer = build(cfg)
    log_config_to_wandb(trainer, cfg)
    trainer.fit(module, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))

    # Final scores on the full splits, from the best checkpoint when one was written.
    ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    ckpt = ckpt or None
    if not trainer.fast_dev_run:
        trainer.limit_val_batches = trainer.limit_test_batches = cfg.get("final_limit_batches", 1.0)
    val = trainer.validate(module, datamodule=dm, ckpt_path=ckpt, verbose=False)[0]
    test = trainer.test(module, datamodule=dm, ckpt_path=ckpt, verbose=False)[0]
    if trainer.is_global_zero:
        print_summary(cfg, module, trainer, val, test, ckpt, time.time() - t0)
        tput = next((cb.tokens_per_sec for cb in trainer.callbacks if isinstance(cb, Throughput)), None)
        write_result(cfg.paths.output_dir, "completed", {**val, **test}, overrides=hydra_job()["overrides"],
                     steps=trainer.global_step, seconds=time.time() - t0, **{"perf/tokens_per_sec": tput})
    return val.get("val/ppl", float("nan"))


def print_summary(cfg, module, trainer, val, test, ckpt, seconds):
    c = module.model.config
    meter = next((cb for cb in trainer.callbacks if isinstance(cb, Throughput)), None)
    tput, mfu = (meter.tokens_per_sec, meter.mfu) if meter else (None, None)
    lines = [
        f"model      {c.n_layer} layers × {c.n_embd} wide, {c.n_head} heads, block {c.block_size}: "
        f"{module.model.num_params() / 1e6:.2f}M parameters",
        f"training   {trainer.global_step} steps, precision {trainer.precision}, "
        + (f"{tput:,.0f} tokens/s" if tput else "tokens/s n/a") + (f", MFU {100 * mfu:.1f}%" if mfu else "")
        + f", {seconds / 60:.1f} min in all",
    ]
    for name, m in (("val", val), ("test", test)):
        if f"{name}/ppl" in m:
            lines.append(f"{name:<10} ppl {m[f'{name}/ppl']:.2f}   loss {m[f'{name}/loss']:.4f}   "
                         f"word ppl {m.get(f'{name}/word_ppl', float('nan')):.2f}   "
                         f"bits/byte {m.get(f'{name}/bpb', float('nan')):.4f}   acc {m[f'{name}/acc']:.4f}")
    lines.append(f"checkpoint {ckpt or '(none written)'}")
    lines.append(f"outputs    {cfg.paths.output_dir}")
    print("\n".join(["", "gptlab summary", *("  " + line for line in lines)]), flush=True)
