"""What training a model will take, known before anything is allocated: its memory against what the device has
free, and its FLOPs per step. The model is built on the meta device (shapes, no storage), so its own accounting
(num_params, flops_per_token) answers, for a model of any size.
"""

import os
from dataclasses import dataclass

import torch

from gptlab.model.gpt import GPT, GPTConfig

GIB = 2**30


@dataclass
class TrainingCost:
    params: int
    flops_per_token: float
    state_bytes: float  # weights, gradients and optimizer moments
    activation_bytes: float  # kept for the backward pass, at the batch size

    @property
    def bytes(self) -> float:
        return self.state_bytes + self.activation_bytes


def training_cost(config: GPTConfig, batch_size: int, activation_bytes: int = 4, shards: int = 1) -> TrainingCost:
    """An estimate of one training process's memory: fp32 weights, gradients and two optimizer moments per
    parameter (AdamW's; Muon keeps one), split over `shards` processes under FSDP; and the activations the
    backward pass keeps, `activation_bytes` each (2 under mixed precision): ~17 per token, layer and channel
    (Korthikanti et al. 2022, fused attention: no T × T matrix kept), and the output layer's logits."""
    with torch.device("meta"):
        model = GPT(config)
    params = model.num_params()
    tokens = batch_size * config.block_size
    logits = config.vocab_size if config.head == "full" else config.adaptive_cutoffs[0] + len(config.adaptive_cutoffs)
    activations = tokens * (17 * config.n_layer * config.n_embd * activation_bytes + 3 * logits * 4)
    return TrainingCost(params, model.flops_per_token(), 16 * params / shards, activations)


def free_bytes(device: torch.device) -> float | None:
    """Memory free on `device` now: a GPU's, or the machine's available memory for a CPU; None where unknown."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return float(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
