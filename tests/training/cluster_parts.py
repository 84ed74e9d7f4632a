"""Test-only parts for the cluster tests (test_cluster.py), loaded by name from the runs' configs.

Lightning's FSDPStrategy on CPU processes over gloo, so that CI runs gptlab's sharded paths (training,
the final validate/test, full and sharded checkpoints, resume) without a GPU. Two things stop it there, and each is
changed as little as it can be:

- Lightning refuses `fsdp` with a CPU accelerator only for its own class (`type(...) is FSDPStrategy`), and it
  wraps the module with `device_id=root_device.index`, None on a CPU, which torch's FSDP then refuses ("needs a
  non-CPU accelerator device"): here the wrapping passes the CPU device itself.
- A full state dict is gathered with `offload_to_cpu` (Lightning's checkpoints, gptlab's samples): torch moves the
  gathered parameters to the CPU and frees the originals, which on a CPU are the same memory (a crash). Here that
  move is left out where the parameters are on the CPU already.
"""

import contextlib
import os

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.distributed.fsdp._flat_param import FlatParamHandle

from gptlab.config.rundir import restarted

_to_cpu = FlatParamHandle.to_cpu


def _to_cpu_unless_there(self):
    return contextlib.nullcontext() if self.flat_param.device.type == "cpu" else _to_cpu(self)


FlatParamHandle.to_cpu = _to_cpu_unless_there


class CPUFSDPStrategy(FSDPStrategy):
    def _setup_model(self, model):
        if not any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            model = FullyShardedDataParallel(
                module=model, cpu_offload=self.cpu_offload, mixed_precision=self.mixed_precision_config,
                sharding_strategy=self.sharding_strategy, device_id=torch.device("cpu"), **self.kwargs)
        return model


class DieOnce(L.Callback):
    """Ends this rank's process (exit code 1) after training step `step`, in a job's first attempt only: a node
    lost mid-run. A restarted attempt (SLURM_RESTART_COUNT, TORCHELASTIC_RESTART_COUNT > 0) trains on."""

    def __init__(self, step: int, rank: int = 1):
        self.step, self.rank = step, rank

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step and trainer.global_rank == self.rank and not restarted():
            os._exit(1)
