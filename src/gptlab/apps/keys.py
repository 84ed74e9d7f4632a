"""Which rule (rules.py) each config key the user can set takes, in train.py, eval.py and generate.py.

Keys are matched by their full dotted name as shell patterns (`callbacks.*.dirpath`); the first match wins.
tests/test_validate.py walks every leaf key of every config with bad values, and fails on a key of the shipped
configs that has no rule of its own here: a new key comes with its rule.
"""

from __future__ import annotations

import fnmatch

from gptlab.apps.rules import (
    COUNT_MAX,
    PRECISIONS,
    Any,
    AnyText,
    Bool,
    Choice,
    Devices,
    Duration,
    Either,
    Fraction,
    Int,
    List,
    Num,
    Off,
    Rule,
    RunName,
    Text,
    Tokenizer,
    Unchecked,
)

BATCHES = Either(Int(1), Fraction())  # a number of batches, or a fraction of them
TRAINING_STEPS = Int(1, special={-1: "no limit"})

# key pattern -> rule, first match wins
RULES: dict[str, Rule] = {
    # classes and partial calls that Hydra builds; a wrong class name is reported by Hydra in one line
    "*._target_": Text(),
    "*._partial_": Bool(),
    # the run
    "name": RunName(),
    "seed": Int(0, 2**32 - 1),
    "compile": Bool(),
    "seq_len_warmup": Int(0, COUNT_MAX),
    "ckpt_path": Text(null=True),
    "init_from": Text(null=True),  # eval.py, generate.py: pretrained GPT-2 (a Hub name or a directory)
    "resume": Bool(),
    "final_limit_batches": BATCHES,
    "global_batch_tokens": Int(1, COUNT_MAX, null=True),
    # paths
    "paths.data_dir": Text(null=True),
    "paths.cache_dir": Text(null=True),
    "paths.output_dir": Text(),
    # data
    "data.data_dir": Text(null=True),
    "data.cache_dir": Text(null=True),
    "data.variant": Choice("tokens", "raw"),
    "data.tokenizer": Tokenizer(),
    "data.block_size": Int(1, COUNT_MAX, null=True),  # eval.py: null, the model's
    "data.batch_size": Int(1, COUNT_MAX),
    "data.eval_batch_size": Int(1, COUNT_MAX, null=True),
    "data.sampling": Choice("random", "sequential"),
    "data.eval_stride": Int(1, COUNT_MAX, null=True),
    "data.num_workers": Int(0, COUNT_MAX),
    "data.seed": Int(0, 2**32 - 1),
    "data.download": Bool(),
    "data.splits": List(Choice("train", "valid", "test")),
    "data.urls": List(Text(), null=True),
    "data.sha256": Any(),  # {file name: sha256}: checked when the files are verified
    # model
    "model.vocab_size": Int(1, COUNT_MAX),
    "model.block_size": Int(1, COUNT_MAX),
    "model.n_layer": Int(1, COUNT_MAX),
    "model.n_head": Int(1, COUNT_MAX),
    "model.n_embd": Int(1, COUNT_MAX),
    "model.dropout": Num(0, 0.999),
    "model.bias": Bool(),
    "model.tie_weights": Bool(),
    "model.head": Choice("full", "adaptive"),
    "model.adaptive_cutoffs": List(Int(1), increasing=True),
    "model.adaptive_div": Num(1),
    "model.init_std": Num(0, above=True),
    "model.loss_chunk": Int(1, COUNT_MAX),
    "model.init_from": Text(null=True),  # a Hub name or a directory: checked in validate.py
    "model.pos_emb": Choice("learned", "rope"),
    "model.norm": Choice("layernorm", "rmsnorm"),
    "model.qk_norm": Bool(),
    "model.mlp": Choice("gelu", "relu2"),
    "model.zero_init_proj": Bool(),
    "model.value_embed": Bool(),
    "model.logit_softcap": Num(0, above=True, null=True),
    # optimizer (lr 0 is allowed with a warning: validate.py)
    "optimizer.lr": Num(0),
    "optimizer.adamw_lr": Num(0),
    "optimizer.betas": List(Num(0, 0.9999999), length=2),
    "optimizer.adamw_betas": List(Num(0, 0.9999999), length=2),
    "optimizer.weight_decay": Num(0),
    "optimizer.eps": Num(0, above=True),
    "optimizer.momentum": Num(0, 0.9999999),
    "optimizer.nesterov": Bool(),
    "optimizer.fused": Bool(null=True),
    "optimizer.adjust_lr_fn": Choice("original", "match_rms_adamw", null=True),
    "optimizer.ns_dtype": Choice("auto", "bf16", "fp32"),
    "optimizer.*": Unchecked(),  # another optimizer's own arguments: torch.optim checks them when it is built
    # scheduler
    "scheduler.total_steps": Int(1),
    "scheduler.warmup_steps": Int(0),
    "scheduler.min_lr_ratio": Num(0, 1),
    # trainer: Lightning's Trainer arguments
    "trainer.accelerator": Choice("auto", "cpu", "gpu", "cuda", "mps", "tpu"),
    "trainer.devices": Devices(),
    "trainer.num_nodes": Int(1, COUNT_MAX),
    "trainer.strategy": Text(),  # a name (auto, ddp, fsdp); or a strategy's config (conf/trainer/fsdp.yaml):
    "trainer.strategy.sharding_strategy": Choice("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"),
    "trainer.strategy.state_dict_type": Choice("full", "sharded"),
    "trainer.strategy.cpu_offload": Bool(),
    "trainer.strategy.activation_checkpointing_policy": Any(),  # a policy object's config, or null
    "trainer.strategy.auto_wrap_policy.*": Any(),
    "trainer.precision": Either(Choice(*PRECISIONS), Choice(16, 32, 64)),
    "trainer.max_steps": TRAINING_STEPS,
    "trainer.max_epochs": Int(1, null=True, special={-1: "no limit"}),
    "trainer.min_steps": Int(0, null=True),
    "trainer.min_epochs": Int(0, null=True),
    "trainer.max_time": Duration(null=True),
    "trainer.val_check_interval": Either(Int(1), Fraction(), null=True),
    "trainer.check_val_every_n_epoch": Int(1, null=True),
    "trainer.limit_train_batches": BATCHES,
    "trainer.limit_val_batches": Either(Int(0), Fraction()),  # 0: no validation during training
    "trainer.limit_test_batches": BATCHES,
    "trainer.overfit_batches": Either(Int(0), Fraction()),
    "trainer.num_sanity_val_steps": Int(0, special={-1: "all batches"}),
    "trainer.gradient_clip_val": Num(0, above=True, null=True),
    "trainer.gradient_clip_algorithm": Choice("norm", "value", null=True),
    "trainer.accumulate_grad_batches": Int(1, COUNT_MAX),
    "trainer.log_every_n_steps": Int(1),
    "trainer.deterministic": Either(Bool(), Choice("warn")),
    "trainer.benchmark": Bool(null=True),
    "trainer.fast_dev_run": Either(Bool(), Int(1)),
    "trainer.enable_checkpointing": Bool(),
    "trainer.enable_progress_bar": Bool(),
    "trainer.enable_model_summary": Bool(),
    "trainer.default_root_dir": Text(null=True),
    "trainer.profiler": Text(null=True),
    "trainer.*": Unchecked(),  # Lightning's other arguments: the Trainer checks them when it is built
    # loggers
    "logger.*.save_dir": Text(null=True),
    "logger.*.name": AnyText(null=True),
    "logger.*.version": Either(AnyText(), Int(0), null=True),
    "logger.wandb.project": Text(),
    "logger.wandb.group": Text(null=True),
    "logger.wandb.tags": List(Text(), empty=True, null=True),
    "logger.wandb.offline": Bool(null=True),
    "logger.wandb.log_model": Either(Bool(), Choice("all")),
    "logger.wandb.watch": Choice("gradients", "parameters", "all", null=True),
    "logger.wandb.watch_log_freq": Int(1),
    "logger.wandb.id": Text(null=True),
    "logger.wandb.resume": Choice("allow", "must", "never", "auto", null=True),
    "logger.*": Unchecked(),
    # callbacks
    **{f"callbacks.{name}": Off() for name in ("model_checkpoint", "lr_monitor", "throughput", "sample_text",
                                                "progress_bar", "resume_checkpoint", "time_budget", "step_seed",
                                                "nan_guard")},
    **{f"logger.{name}": Off() for name in ("csv", "tensorboard", "wandb")},
    "callbacks.model_checkpoint.dirpath": Text(null=True),
    "callbacks.model_checkpoint.filename": Text(null=True),
    "callbacks.model_checkpoint.auto_insert_metric_name": Bool(),
    "callbacks.model_checkpoint.monitor": Text(null=True),
    "callbacks.model_checkpoint.mode": Choice("min", "max"),
    "callbacks.model_checkpoint.save_top_k": Int(0, special={-1: "all"}),
    "callbacks.model_checkpoint.save_last": Either(Bool(), Choice("link"), null=True),
    "callbacks.lr_monitor.logging_interval": Choice("step", "epoch", null=True),
    "callbacks.throughput.window": Int(1, COUNT_MAX),
    "callbacks.throughput.skip": Int(0),
    "callbacks.throughput.peak_flops": Either(Num(0, above=True), Choice("auto"), null=True),
    "callbacks.sample_text.prompts": List(Text()),
    "callbacks.sample_text.max_new_tokens": Int(1, COUNT_MAX),
    "callbacks.sample_text.temperature": Num(0),
    "callbacks.sample_text.path": Text(null=True),
    "callbacks.sample_text.tokenizer": Tokenizer(),
    "callbacks.resume_checkpoint.dirpath": Text(),
    "callbacks.resume_checkpoint.every_n_train_steps": Int(1, null=True),
    "callbacks.resume_checkpoint.every_n_minutes": Num(0, above=True, null=True),
    "callbacks.time_budget.max_time": Duration(null=True),
    "callbacks.time_budget.skip_steps": Int(0),
    "callbacks.time_budget.measure_steps": Int(1, COUNT_MAX),
    "callbacks.time_budget.reserve": Num(0, 0.9),
    "callbacks.step_seed.seed": Int(0, 2**32 - 1),
    "callbacks.nan_guard.action": Choice("stop", "skip"),
    "callbacks.nan_guard.inject_at_step": Int(0, null=True),
    "callbacks.*": Unchecked(),
    "task": Off(),  # a callback added by the user: its class checks its arguments
    # eval.py
    "split": Choice("valid", "test", "both", "train"),
    "stride": Int(1, COUNT_MAX, null=True),
    "batch_size": Int(1, COUNT_MAX),
    "limit_windows": Int(1, null=True),
    "documents": Bool(),
    "device": Text(),
    "precision": Either(Choice(*PRECISIONS), Choice(16, 32, 64)),
    "report": Text(null=True),
    # generate.py
    "prompt": Text(null=True),
    "max_new_tokens": Int(1, COUNT_MAX),
    "temperature": Num(0),
    "top_k": Int(1, COUNT_MAX, null=True),
    "top_p": Num(0, 1, above=True, null=True),
    "num_samples": Int(1, COUNT_MAX),
    "stop": Text(null=True, blank=True),
    "tokenizer": Tokenizer(null=True),
    "task_file": Text(null=True),
    "out_dir": Text(null=True),
    "task.name": Text(),
    "task.template": Text(),
    "task.metric": Choice("squad", "rouge_l", "bleu"),
}


def rule_for(key: str) -> Rule | None:
    """The rule of a dotted key, or None when no pattern matches it."""
    return next((rule for pattern, rule in RULES.items() if fnmatch.fnmatchcase(key, pattern)), None)
