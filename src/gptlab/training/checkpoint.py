"""Load a trained model back from a Lightning checkpoint written by train.py: the one checkpoint-to-model loader.

    from gptlab.training.checkpoint import load_for_inference
    run = load_for_inference("outputs/runs/gpt_micro/<time>/checkpoints/last.ckpt", precision="auto")
    run.model, run.tokenizer, run.autocast   # a GPT in eval mode on its device, its tokenizer, the precision

Checkpoints hold their hyper-parameters as plain dicts (see module.py), so they load with `weights_only=True`:
opening a checkpoint never runs code from it, and a file that would is refused (checkpoint_io.load_checkpoint).
Nothing named in a checkpoint is instantiated: the model is built from its plain config fields alone.
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from gptlab.data.tokenizer import Tokenizer
from gptlab.errors import GptlabError, GptlabFileNotFoundError
from gptlab.model.gpt import GPT, GPTConfig
from gptlab.training.checkpoint_io import load_checkpoint
from gptlab.training.module import GPTLitModule, current_target
from gptlab.training.precision import apply_precision, resolve_device, resolve_precision
from gptlab.training.pretrained import pretrained_model


def load_module(ckpt_path, map_location="cpu") -> GPTLitModule:
    """The GPTLitModule saved in `ckpt_path`, weights loaded, in eval mode (compilation off)."""
    path = _existing(ckpt_path)
    ckpt = load_checkpoint(path, map_location)  # weights-only: a crafted file is refused with a clear error
    try:
        module = GPTLitModule(model=ckpt["hyper_parameters"]["model"], compile=False)  # no optimizer to build
        module.load_state_dict(ckpt["state_dict"])
    except Exception as e:  # a truncated file, another kind of checkpoint, mismatched weights
        raise GptlabError(f"ckpt_path={path} is not a gptlab checkpoint that can be loaded: {e}") from e
    return module.eval()


def load_model(ckpt_path, map_location="cpu") -> GPT:
    """The GPT saved in `ckpt_path`, in eval mode."""
    return load_module(ckpt_path, map_location).model


# GPTConfig fields that decide the shapes of the weights: a checkpoint only fits a model that agrees on them
SHAPE_FIELDS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias", "tie_weights", "head",
                "adaptive_cutoffs", "adaptive_div")


def check_compatible(ckpt_path, model_config: dict, optimizer_config: dict | None = None) -> None:
    """Raise a one-line error when `ckpt_path` is missing, unreadable, not a gptlab checkpoint, holds a model of
    another shape than `model_config` (GPTConfig fields), or the state of another optimizer class than
    `optimizer_config`'s: training on from it needs both to fit."""
    path = _existing(ckpt_path)
    ckpt = load_checkpoint(path, mmap=True)  # tensors stay on disk: only the hyper-parameters are read
    saved = (ckpt.get("hyper_parameters") or {}).get("model")
    if not isinstance(saved, dict):
        raise GptlabError(f"ckpt_path={path} is not a gptlab checkpoint (it has no model hyper-parameters)")

    defaults = dataclasses.asdict(GPTConfig())  # a field the file (or the config) lacks has its default
    old, new = ({k: _plain(d.get(k, defaults[k])) for k in SHAPE_FIELDS} for d in (saved, model_config))
    diffs = [f"{k}={old[k]} (this run: {new[k]})" for k in SHAPE_FIELDS if old[k] != new[k]]
    if diffs:
        raise GptlabError(f"ckpt_path={path} holds a model of another shape than this run's: {', '.join(diffs)}. "
                          f"Use the model config it was trained with (its run's .hydra/config.yaml)")
    was = current_target(((ckpt.get("hyper_parameters") or {}).get("optimizer") or {}).get("_target_"))
    now = current_target((optimizer_config or {}).get("_target_"))
    if was and now and was != now:
        raise GptlabError(f"ckpt_path={path} holds the state of optimizer {was}, this run uses {now}: use the "
                          f"optimizer it was trained with")


def run_config(ckpt_path):
    """The Hydra config of the training run that wrote `ckpt_path` (<run>/checkpoints/x.ckpt next to
    <run>/.hydra/config.yaml), unresolved; None when it is not there."""
    path = Path(ckpt_path).parent.parent / ".hydra" / "config.yaml"
    return OmegaConf.load(path) if path.is_file() else None


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _existing(ckpt_path) -> Path:
    if ckpt_path is None or str(ckpt_path).strip() == "":
        raise GptlabError("ckpt_path is required, e.g. ckpt_path=outputs/runs/<name>/<time>/checkpoints/last.ckpt")
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise GptlabFileNotFoundError(f"ckpt_path={path} does not exist or is not a file")
    return path


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


def load_for_inference(ckpt_path, device="auto", precision="auto", tokenizer=None, tokenizer_key="tokenizer",
                       data_dir=None, init_from=None) -> Inference:
    """The one way from a checkpoint to a model to apply (eval.py, generate.py, notebooks). tokenizer: a tiktoken
    name; None: the training run's (its .hydra/config.yaml), else gpt2. tokenizer_key: the config key that set
    it, named in the error when its vocabulary does not fit the model. data_dir: where tiktoken-cache/ may be.
    init_from (no ckpt_path): GPT-2 weights, a Hub name or a Hugging Face directory (pretrained.py)."""
    device = resolve_device(device)
    if ckpt_path is None and init_from:
        model, run = pretrained_model(init_from).to(device), None
    else:
        if ckpt_path is None:
            raise GptlabError("ckpt_path=null: give the checkpoint to use (ckpt_path=outputs/runs/<name>/<time>/"
                              "checkpoints/<file>.ckpt), or init_from=gpt2 for pretrained GPT-2")
        model, run = load_model(ckpt_path).to(device), run_config(ckpt_path)
    model, autocast = apply_precision(model, precision, device)
    tok = Tokenizer(tokenizer or (run is not None and run.get("data", {}).get("tokenizer")) or "gpt2", data_dir)
    if tok.vocab_size != model.config.vocab_size:
        raise GptlabError(f"tokenizer {tok.name!r} has {tok.vocab_size} tokens but the model has "
                          f"{model.config.vocab_size}: set {tokenizer_key} to the one it was trained with")
    return Inference(model, autocast, tok, device, resolve_precision(precision, device.type), run)
