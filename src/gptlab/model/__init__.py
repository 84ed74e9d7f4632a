"""The model layer: a GPT in plain PyTorch (no Lightning, no Hydra), its output heads and losses, the KV cache, the
one decoder (decode.py), the language-model metrics (perplexity, word-level perplexity, bits per byte), where and
in what precision it runs (precision.py), and its weights on disk: gptlab checkpoints (checkpoint.py) and GPT-2's
Hugging Face format (hf.py). Imports nothing from the layers above it (data, inference, training, apps)."""

from gptlab.model.gpt import GPT, Block, GPTConfig, KVCache
from gptlab.model.loss import IGNORE_INDEX

__all__ = ["GPT", "Block", "GPTConfig", "KVCache", "IGNORE_INDEX"]
