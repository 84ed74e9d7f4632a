"""The data layer: WikiText-2 files (find, download, verify), the tiktoken tokenizer, the token cache (uint16
memmaps keyed by tokenizer, variant and file hash), training and evaluation windows, the resumable sampler and the
Lightning DataModule. Imports only from the model layer below it."""

from gptlab.data.datamodule import EvalWindows, PaddedWindows, TrainWindows, WikiText2DataModule
from gptlab.model.loss import IGNORE_INDEX

__all__ = ["WikiText2DataModule", "TrainWindows", "EvalWindows", "PaddedWindows", "IGNORE_INDEX"]
