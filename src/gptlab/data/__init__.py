"""The data layer: WikiText-2 files (find, download, verify), the tiktoken tokenizer, the token cache (uint16
memmaps keyed by tokenizer, variant and file hash), the corpus of ids (no torch), training and evaluation windows,
the resumable sampler and the Lightning data module (datamodule.py, imported from there: it brings Lightning).
Imports only from the config and model layers below it."""

from gptlab.data.corpus import WikiText2
from gptlab.data.windows import EvalWindows, PaddedWindows, TrainWindows
from gptlab.model.loss import IGNORE_INDEX

__all__ = ["WikiText2", "TrainWindows", "EvalWindows", "PaddedWindows", "IGNORE_INDEX"]
