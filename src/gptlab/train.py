"""`python train.py`: build data, model, callbacks, loggers and trainer from the Hydra config; fit, then validate
and test the best checkpoint on the full splits."""

import time

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gptlab.callbacks import Throughput
from gptlab.module import GPTLitModule


def cpu_has_fast_bf16() -> bool:
    """bf16 matmuls beat fp32 on CPUs with AVX512-BF16 or AMX; elsewhere they are many times slower."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision, accelerator="auto"):
    """`auto`: bf16-mixed where it is fast (CUDA with bf16, CPUs with AVX512-BF16/AMX), else 16-mixed on older
    GPUs and 32-true on other CPUs."""
    if str(precision) != "auto":
        return precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_fast_bf16() else "32-true"


def build(cfg: DictConfig):
    """Data module, LightningModule, Trainer, built from config; nothing runs yet."""
    dm = instantiate(cfg.data)
    model_cfg = instantiate(cfg.model, _convert_="all")
    model_cfg.vocab_size = dm.vocab_size  # the tokenizer decides
    module = GPTLitModule(model=model_cfg, optimizer=cfg.optimizer, scheduler=cfg.get("scheduler"),
                          compile=cfg.get("compile", False))
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c and "_target_" in c]
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg["precision"] = resolve_precision(trainer_cfg.get("precision", "auto"),
                                                 trainer_cfg.get("accelerator", "auto"))
    trainer = instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False)
    return dm, module, trainer


def run(cfg: DictConfig) -> float:
    """Train and evaluate; returns the validation perplexity (the value a sweeper minimises)."""
    t0 = time.time()
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    dm, module, trainer = build(cfg)
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
    return val.get("val/ppl", float("nan"))


def print_summary(cfg, module, trainer, val, test, ckpt, seconds):
    c = module.model.config
    tput = next((cb.tokens_per_sec for cb in trainer.callbacks if isinstance(cb, Throughput)), None)
    lines = [
        f"model      {c.n_layer} layers × {c.n_embd} wide, {c.n_head} heads, block {c.block_size}: "
        f"{module.model.num_params() / 1e6:.2f}M parameters",
        f"training   {trainer.global_step} steps, precision {trainer.precision}, "
        + (f"{tput:,.0f} tokens/s" if tput else "tokens/s n/a") + f", {seconds / 60:.1f} min in all",
    ]
    for name, m in (("val", val), ("test", test)):
        if f"{name}/ppl" in m:
            lines.append(f"{name:<10} ppl {m[f'{name}/ppl']:.2f}   loss {m[f'{name}/loss']:.4f}   "
                         f"word ppl {m.get(f'{name}/word_ppl', float('nan')):.2f}   "
                         f"bits/byte {m.get(f'{name}/bpb', float('nan')):.4f}   acc {m[f'{name}/acc']:.4f}")
    lines.append(f"checkpoint {ckpt or '(none written)'}")
    lines.append(f"outputs    {cfg.paths.output_dir}")
    print("\n".join(["", "gptlab summary", *("  " + line for line in lines)]), flush=True)
