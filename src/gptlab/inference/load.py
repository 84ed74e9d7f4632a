"""A trained model ready to apply, without Lightning: the one loader from a checkpoint (or GPT-2's weights) to a GPT on
its device, in its precision, with the tokenizer it was trained with. eval.py, generate.py, the Hugging Face export,
lm-eval and notebooks use it.

    from gptlab.inference import load_for_inference
    from gptlab.model.decode import complete
    run = load_for_inference("outputs/runs/<name>/<time>/checkpoints/last.ckpt", precision="auto")
    with run.autocast():
        print(complete(run.model, run.tokenizer, "The history of", max_new_tokens=40, temperature=0))
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from gptlab.data.tokenizer import Tokenizer
from gptlab.errors import GptlabError
from gptlab.model.checkpoint import load_model
from gptlab.model.gpt import GPT
from gptlab.model.hf import pretrained_model, resolve
from gptlab.model.precision import apply_precision, inference_device, resolve_precision


@dataclass
class Inference:
    """A trained model ready to apply: on its device, in its precision (wrap calls in `autocast()`), with the
    tokenizer it was trained with and the training run's config (None when the run directory is not there)."""

    model: GPT
    autocast: Callable
    tokenizer: Tokenizer
    device: torch.device
    precision: str
    run_config: DictConfig | None


def run_config(ckpt_path) -> DictConfig | None:
    """The Hydra config of the training run that wrote `ckpt_path` (<run>/checkpoints/x.ckpt next to
    <run>/.hydra/config.yaml), unresolved; None when it is not there."""
    path = Path(ckpt_path).parent.parent / ".hydra" / "config.yaml"
    return OmegaConf.load(path) if path.is_file() else None


def check_sources(ckpt_path, init_from, device="auto", precision="auto") -> torch.device:
    """What a model to apply needs, checked before anything is read: the device and precision are to be had here,
    and a model is named (a checkpoint, or GPT-2 weights that can be found). Returns the device."""
    device = inference_device(device, precision)
    if ckpt_path is None and not init_from:
        raise GptlabError("ckpt_path=null: give the checkpoint to use (ckpt_path=outputs/runs/<name>/<time>/"
                          "checkpoints/<file>.ckpt), or init_from=gpt2 for pretrained GPT-2")
    if ckpt_path is None:
        resolve(init_from, "init_from")
    return device


def load_for_inference(ckpt_path, device="auto", precision="auto", tokenizer=None, tokenizer_key="tokenizer",
                       data_dir=None, init_from=None) -> Inference:
    """The one way from a checkpoint to a model to apply. tokenizer: a tiktoken name; None: the training run's (its
    .hydra/config.yaml), else gpt2. tokenizer_key: the config key that set it, named in the error when its
    vocabulary does not fit the model. data_dir: where tiktoken-cache/ may be. init_from (no ckpt_path): GPT-2
    weights, a Hub name or a Hugging Face directory (model/hf.py)."""
    device = check_sources(ckpt_path, init_from, device, precision)
    if ckpt_path is None:
        model, run = pretrained_model(init_from).to(device), None
    else:
        model, run = load_model(ckpt_path).to(device), run_config(ckpt_path)
    model, autocast = apply_precision(model, precision, device)
    tok = Tokenizer(tokenizer or (run is not None and run.get("data", {}).get("tokenizer")) or "gpt2", data_dir)
    if tok.vocab_size != model.config.vocab_size:
        raise GptlabError(f"tokenizer {tok.name!r} has {tok.vocab_size} tokens but the model has "
                          f"{model.config.vocab_size}: set {tokenizer_key} to the one it was trained with")
    return Inference(model, autocast, tok, device, resolve_precision(precision, device.type), run)
