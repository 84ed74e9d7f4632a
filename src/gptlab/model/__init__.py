"""The model layer: a GPT in plain PyTorch (no Lightning, no Hydra), its output heads and losses, the KV cache,
the one decoder (decode.py) and the language-model metrics (perplexity, word-level perplexity, bits per byte).
Imports nothing from the layers above it (data, training, apps)."""

from gptlab.model.gpt import GPT, Block, GPTConfig, KVCache
from gptlab.model.loss import IGNORE_INDEX

__all__ = ["GPT", "Block", "GPTConfig", "KVCache", "IGNORE_INDEX"]
