"""The Trainer keys gptlab acts on (the `trainer` group): the machine (accelerator, devices, nodes, precision), the
run's length in steps and time (its learning-rate schedule and time budget follow them), validation and logging by
step, gradient accumulation and clipping. Their values are in conf/trainer/*.yaml. Every other argument of
lightning.Trainer (`+trainer.profiler=simple`, strategy, limit_val_batches, ...) is Lightning's: passed on, and
checked by the Trainer itself."""

from dataclasses import dataclass
from typing import Literal

from gptlab.config.declare import COUNT_MAX, Devices, Duration, Fraction, key

# Lightning's precision settings, and gptlab's `auto` (bf16-mixed where bf16 is fast, else 16-mixed on GPUs or 32-true)
Precision = Literal["auto", "32-true", "32", "bf16-mixed", "bf16-true", "bf16", "16-mixed", "16-true", "16", "64-true",
                    "64", "transformer-engine", "transformer-engine-float16", 16, 32, 64]


@dataclass(eq=False, kw_only=True)
class Trainer:
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps", "tpu"] = key(
        help="auto: a GPU when there is one; the default run's time budget applies on the CPU only")
    devices: Devices = key(help="processes per machine (GPUs, or CPU processes); more than one runs DDP")
    num_nodes: int = key(help="machines, each running `devices` processes (started by torchrun or SLURM)",
                         ge=1, le=COUNT_MAX)
    precision: Precision = key(help="auto: bf16-mixed where bf16 is fast (CUDA, CPUs with AVX512-BF16 or AMX), "
                                    "16-mixed on older GPUs, else 32-true")
    max_steps: int = key(help="optimizer steps to train; the learning-rate schedule ends here", ge=1,
                         special={-1: "no limit"})
    max_epochs: int | None = key(help="training is measured in steps: -1", ge=1, special={-1: "no limit"})
    max_time: Duration | None = key(help="a wall-clock budget for training: turned into a number of steps early "
                                         "in the run (callbacks.time_budget); null: run by steps")
    val_check_interval: int | Fraction | None = key(help="validate every N optimizer steps (or a fraction of an "
                                                         "epoch) on limit_val_batches batches", ge=1)
    check_val_every_n_epoch: int | None = key(help="null: validation is by steps (val_check_interval)", ge=1)
    gradient_clip_val: float | None = key(help="clip the gradient norm to this; null: no clipping", gt=0)
    accumulate_grad_batches: int = key(help="micro-batches per optimizer step (global_batch_tokens sets it for "
                                            "you)", ge=1, le=COUNT_MAX)
    log_every_n_steps: int = key(help="steps between logged training metrics", ge=1)
    deterministic: bool | Literal["warn"] = key(help="deterministic algorithms (a time budget is then off: its "
                                                      "steps would depend on the machine's speed)")
