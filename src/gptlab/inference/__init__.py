"""The inference layer: a trained model applied, without Lightning. load.py: the one loader from a checkpoint (or
GPT-2's weights) to a GPT on its device, in its precision, with its tokenizer; score.py: the model scored on text
(perplexity, word-level perplexity, bits per byte). eval.py, generate.py, the Hugging Face export, lm-eval and
notebooks use it. Imports only from the config, model and data layers below it."""

from gptlab.inference.load import Inference, check_sources, load_for_inference, run_config
from gptlab.inference.score import document_metrics, score_windows, split_metrics

__all__ = ["Inference", "check_sources", "load_for_inference", "run_config", "score_windows", "split_metrics",
           "document_metrics"]
