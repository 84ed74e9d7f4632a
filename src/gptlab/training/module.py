"""GPTLitModule: the GPT of model.py trained, validated and tested by Lightning."""

import dataclasses
import logging
import math

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.enums import GradClipAlgorithmType
from omegaconf import DictConfig, OmegaConf
from torchmetrics import SumMetric

from gptlab.errors import GptlabError
from gptlab.model.gpt import GPT, GPTConfig
from gptlab.model.hf import load_weights
from gptlab.model.metrics import lm_metrics
from gptlab.training.optim import mup_learning_rates
from gptlab.training.resilience import NonFiniteLossError

log = logging.getLogger(__name__)


def _plain(cfg):
    """Configs are stored in checkpoints as plain dicts (no pickled classes): safe to load with weights_only."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    return cfg


def param_groups(model, dims=None):
    """Three groups: 2-D weights inside the blocks ("matrix", weight-decayed), embeddings and the tied output
    layer ("embedding", no decay), biases and norms ("other", no decay). dims: {name: number of dimensions}
    recorded before FSDP wrapped the model (it shows each parameter as a 1-D shard)."""
    matrix, embedding, other = [], [], []
    for name, p in model.named_parameters():  # tied weights appear once
        if not p.requires_grad:
            continue
        name = name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")
        dim = (dims or {}).get(name, p.dim())
        if name.startswith("transformer.h.") and dim == 2:
            matrix.append(p)
        elif dim == 2:
            embedding.append(p)
        else:
            other.append(p)
    groups = [
        {"params": matrix, "name": "matrix"},
        {"params": embedding, "name": "embedding", "weight_decay": 0.0},
        {"params": other, "name": "other", "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def clip_path(strategy, precision, optimizer) -> str:
    """How gradients are clipped: "fsdp" under FSDP (the root FSDP module's clip_grad_norm_: a norm over all
    shards; Lightning refuses to clip by norm there, and torch.nn.utils would take each rank's shard alone),
    "manual" for an optimizer that unscales fp16 gradients itself (fused AdamW) under mixed precision, which
    Lightning refuses to clip, else "lightning" (Lightning's own clipping)."""
    from lightning.pytorch.strategies import FSDPStrategy

    if isinstance(strategy, FSDPStrategy):
        return "fsdp"
    if str(precision) in ("bf16-mixed", "16-mixed") and getattr(optimizer, "_step_supports_amp_scaling", False):
        return "manual"
    return "lightning"


def _saved_param_groups(state) -> list[dict]:
    """The parameter groups in an optimizer's state dict, in order; also of one made of several (MuonAdamW)."""
    if isinstance(state, dict):
        return state["param_groups"] if "param_groups" in state else [
            g for v in state.values() for g in _saved_param_groups(v)]
    if isinstance(state, list | tuple):
        return [g for v in state for g in _saved_param_groups(v)]
    return []


class GPTLitModule(L.LightningModule):
    """Trains a GPT with token-weighted validation: perplexity is exact with masked padding.

    model: a GPTConfig or a dict of its fields. optimizer and scheduler: their configs (built by `_target_`) or
    callables, called with the parameter groups and with the optimizer.
    """

    def __init__(self, model, optimizer=None, scheduler=None, compile: bool = False):
        super().__init__()
        model, optimizer, scheduler = _plain(model), _plain(optimizer), _plain(scheduler)
        self.save_hyperparameters(
            {"model": model, "optimizer": optimizer if isinstance(optimizer, dict) else None,
             "scheduler": scheduler if isinstance(scheduler, dict) else None, "compile": compile}
        )
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        model = {k: v for k, v in model.items() if k != "_target_"}
        self.model = GPT(GPTConfig(**model))
        self.param_dims = {n: p.dim() for n, p in self.model.named_parameters()}  # before any FSDP wrapping
        self.flops_per_token = None  # training FLOPs a token, as trained: counted in setup
        self.split_stats = {}  # filled from the data module: words and bytes for word-level ppl and bits/byte
        for split in ("val", "test"):  # summed over batches and processes: exact token-weighted means
            for k in ("nll", "count", "correct"):  # correct: targets that were the top-1 prediction
                # nan_strategy: a NaN is summed (and refused in _eval_epoch_end), not dropped with a warning
                setattr(self, f"{split}_{k}", SumMetric(nan_strategy="disable").set_dtype(torch.float64))

    def configure_model(self):
        if self.hparams.compile:
            self.model.compile()

    def setup(self, stage):
        dm = getattr(self.trainer, "datamodule", None)
        stats = getattr(dm, "stats", None) or {}
        self.split_stats = {"val": stats.get("valid"), "test": stats.get("test")}
        if stage == "fit" and self.model.config.init_from and getattr(self.trainer, "ckpt_path", None) is None:
            load_weights(self.model, self.model.config.init_from)  # GPT-2's weights; a checkpoint brings its own
        if stage == "fit" and self.model.config.head == "adaptive" and dm is not None:
            # rank tokens by training-set frequency; a checkpoint being resumed overwrites this with its own
            counts = np.bincount(dm.ids("train"), minlength=self.model.config.vocab_size)
            self.model.set_vocab_order(counts)
        if stage == "fit":  # before FSDP shards the weights it counts; the adaptive head's clusters' shares known
            self.flops_per_token = self.model.flops_per_token(getattr(dm, "block_size", None))

    def forward(self, idx, targets=None):
        return self.model(idx, targets)

    def training_step(self, batch, batch_idx):
        x, y = batch
        _, loss = self.model(x, y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _eval_step(self, batch, split):
        x, y = batch
        nll, count, correct = self.model.score(x, y)
        for k, v in (("nll", nll), ("count", count), ("correct", correct.sum())):
            getattr(self, f"{split}_{k}").update(v.double())

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def _eval_epoch_end(self, split):
        sums = [getattr(self, f"{split}_{k}") for k in ("nll", "count", "correct")]
        nll, count, correct = (m.compute().item() for m in sums)  # summed over processes
        name = "validation" if split == "val" else "test"
        if not math.isfinite(nll):  # a score over every token or none: never one that left the NaNs out
            raise NonFiniteLossError(f"{name} loss is NaN or Inf at step {self.trainer.global_step}: the weights have "
                                     f"diverged, so no score is logged and no checkpoint is chosen on it. Lower "
                                     f"optimizer.lr, or check trainer.gradient_clip_val and trainer.precision")
        if count == 0:  # an empty score would be 0/0, or a best checkpoint chosen on a metric left unlogged
            raise GptlabError(f"{name} at step {self.trainer.global_step} scored no tokens: check "
                              f"trainer.limit_{split}_batches and the {name} split")
        metrics = lm_metrics(nll, count, self.split_stats.get(split))
        metrics["acc"] = correct / count  # token top-1 accuracy
        metrics["tokens"] = count
        # values are already reduced across processes: log them as they are on every rank
        self.log_dict({f"{split}/{k}": float(v) for k, v in metrics.items()}, sync_dist=False, prog_bar=False)
        for m in sums:
            m.reset()

    def on_validation_epoch_end(self):
        self._eval_epoch_end("val")

    def on_test_epoch_end(self):
        self._eval_epoch_end("test")

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if not gradient_clip_val:
            return
        path = clip_path(self.trainer.strategy, self.trainer.precision, optimizer)
        if path == "lightning":
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False):
            scaler.unscale_(optimizer)  # fp16: Lightning left a fused optimizer's gradients scaled; the step knows
        if gradient_clip_algorithm == GradClipAlgorithmType.VALUE:
            torch.nn.utils.clip_grad_value_(self.parameters(), gradient_clip_val)  # per element: right on shards
        elif path == "fsdp":
            self.trainer.strategy.model.clip_grad_norm_(gradient_clip_val)  # the norm over every rank's shards
        else:
            torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)

    def on_load_checkpoint(self, checkpoint):
        """A resumed run trains with this run's optimizer and schedule config: Lightning would restore the saved
        hyper-parameters (learning rates, weight decay, ...) and the saved schedule (its end step among them) over
        the ones just configured. The saved state (moments, step counts, the schedule's step) is kept."""
        saved_opts, saved_scheds = checkpoint.get("optimizer_states"), checkpoint.get("lr_schedulers")
        if self.optimizer_factory is None or not saved_opts:
            return
        fresh = self.configure_optimizers()
        optimizer = fresh["optimizer"] if isinstance(fresh, dict) else fresh
        scheduler = fresh["lr_scheduler"]["scheduler"] if isinstance(fresh, dict) else None
        groups = _saved_param_groups(saved_opts[0])
        if len(groups) != len(optimizer.param_groups):  # another model: Lightning refuses the checkpoint
            return
        changed = set()
        for saved, new in zip(groups, optimizer.param_groups, strict=True):
            for k, v in new.items():  # a schedule's lr is the one of its step, set below; its base is initial_lr
                if k != "params" and (k != "lr" or scheduler is None) and saved.get(k) != v:
                    changed.add("lr" if k == "initial_lr" else k)
                    saved[k] = v
        if scheduler is not None and saved_scheds:
            state, new = saved_scheds[0], scheduler.state_dict()
            for old_fn, new_fn in zip(state.get("lr_lambdas", []), new.get("lr_lambdas", []), strict=False):
                changed |= {f"scheduler.{k}" for k in new_fn if k != "total_steps" and old_fn.get(k) != new_fn[k]}
            # the config's schedule; a time budget's plan (the end step) and where it bent the decay stay the run's
            lambdas = [{**fn, "anchor": old.get("anchor")} if "anchor" in old else fn
                       for fn, old in zip(new["lr_lambdas"], state.get("lr_lambdas", []), strict=False)]
            state.update(base_lrs=new["base_lrs"], lr_lambdas=lambdas or new["lr_lambdas"])
            for saved, fn, base in zip(groups, scheduler.lr_lambdas, new["base_lrs"], strict=True):
                saved["lr"] = base * fn(state["last_epoch"])
            state["_last_lr"] = [g["lr"] for g in groups]
        if changed:
            log.info("resumed with this run's optimizer and schedule settings (%s changed); the optimizer's state "
                     "and the step are the checkpoint's", ", ".join(sorted(changed)))

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise GptlabError("GPTLitModule needs an optimizer (config group optimizer/)")
        make_opt = instantiate(self.optimizer_factory) if isinstance(self.optimizer_factory, dict) \
            else self.optimizer_factory
        optimizer = make_opt(param_groups(self.model, self.param_dims))
        mup_learning_rates(optimizer, self.model.config)
        if self.scheduler_factory is None:
            return optimizer
        make_sched = instantiate(self.scheduler_factory) if isinstance(self.scheduler_factory, dict) \
            else self.scheduler_factory
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": make_sched(optimizer), "interval": "step"}}
