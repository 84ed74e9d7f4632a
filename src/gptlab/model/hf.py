"""GPT-2 weights in Hugging Face's format, in and out: a `transformers` GPT2LMHeadModel directory (config.json +
model.safetensors or pytorch_model.bin) to a gptlab GPT, and back.

The two models are the same network with other names: Hugging Face's GPT-2 keeps its Linear layers as Conv1D,
whose weights are stored transposed, and carries causal-mask buffers (attn.bias, attn.masked_bias) that are not
weights. Plain PyTorch, no `transformers` import: safetensors (when installed) reads the files, huggingface_hub
(when installed) fetches them.

    model.init_from=gpt2                # gpt2, gpt2-medium, gpt2-large, gpt2-xl: downloaded once and cached
    model.init_from=/models/gpt2        # a directory as save_pretrained writes it (config.json, model.safetensors)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gptlab.config.declare import declared, show
from gptlab.config.model import GPTConfig
from gptlab.errors import GptlabError
from gptlab.model.gpt import GPT

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")  # stored (in, out)
NOT_WEIGHTS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of older transformers versions
SIZES = {"n_layer": "n_layer", "n_head": "n_head", "n_embd": "n_embd", "n_positions": "block_size",
         "vocab_size": "vocab_size"}  # config.json key -> GPTConfig field


def read_config(directory) -> dict:
    """The GPTConfig sizes of a Hugging Face GPT-2 directory (from its config.json)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise GptlabError(f"{directory}: no config.json: expected a Hugging Face GPT-2 directory (config.json and "
                          f"model.safetensors or pytorch_model.bin)")
    hf = json.loads(path.read_text())
    if hf.get("model_type") not in (None, "gpt2"):
        raise GptlabError(f"{path}: model_type {hf.get('model_type')!r}, expected gpt2")
    missing = [k for k in SIZES if k not in hf]
    if missing:
        raise GptlabError(f"{path}: lacks {', '.join(missing)}")
    return {field: int(hf[key]) for key, field in SIZES.items()}


def check_config(directory, config, key: str = "model") -> None:
    """The chosen model config has the sizes of the weights in `directory` and GPT-2's architecture."""
    sizes = read_config(directory)
    wrong = [f"{key}.{f}={getattr(config, f)} (the weights: {v})" for f, v in sizes.items() if getattr(config, f) != v]
    if wrong:
        raise GptlabError(f"{directory} holds a GPT-2 of other sizes than the model config: {', '.join(wrong)}. "
                          f"Choose the matching model (model=gpt2 for GPT-2 small) or set those keys")
    check_gpt2_architecture(config, key, "GPT-2 weights need")


def check_gpt2_architecture(config, key, needs):
    """Every model key that GPT-2 fixes (declared with `gpt2=` in gptlab/config/model.py) has GPT-2's value."""
    gpt2 = {name: f.metadata["gpt2"] for name, f in declared(GPTConfig).items() if "gpt2" in f.metadata}
    bad = [name for name, value in gpt2.items() if getattr(config, name) != value]
    if bad:
        wrong = ", ".join(f"{key}.{f}={show(getattr(config, f))}" for f in bad)
        right = " ".join(f"{key}.{f}={show(gpt2[f])}" for f in bad)
        raise GptlabError(f"{wrong}: not GPT-2's architecture; {needs} {right}")


def read_weights(directory) -> dict[str, torch.Tensor]:
    d = Path(directory)
    if (d / "model.safetensors").is_file():
        try:
            from safetensors import SafetensorError
            from safetensors.torch import load_file
        except ImportError as e:
            raise GptlabError(f"{d}/model.safetensors needs safetensors: pip install -e '.[hf]'") from e
        try:
            return load_file(str(d / "model.safetensors"))
        except SafetensorError as e:  # cut short by a download or a copy, or not safetensors at all
            raise GptlabError(f"{d}/model.safetensors: not a whole safetensors file ({e}): download it again") from e
    if (d / "pytorch_model.bin").is_file():
        return torch.load(d / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise GptlabError(f"{d}: no model.safetensors or pytorch_model.bin")


def from_hf(hf_state: dict, model) -> dict[str, torch.Tensor]:
    """gptlab's state dict for `model` from a Hugging Face GPT-2 state dict (with or without the `transformer.`
    prefix). A tensor missing or of the wrong shape is refused, named."""
    state = {}
    for name, tensor in hf_state.items():
        if ("." + name).endswith(NOT_WEIGHTS):
            continue
        name = name if name.startswith(("transformer.", "lm_head.")) else f"transformer.{name}"
        state[name] = tensor.t() if name.endswith(CONV1D) else tensor
    ours = model.state_dict()
    if "lm_head.weight" not in state:
        state["lm_head.weight"] = state.get("transformer.wte.weight")  # tied: stored once, as the embedding
    missing = [k for k in ours if state.get(k) is None]
    if missing:
        raise GptlabError(f"the GPT-2 weights lack {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    for k, v in ours.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise GptlabError(f"the GPT-2 weight {k} has shape {tuple(state[k].shape)}, the model needs "
                              f"{tuple(v.shape)}")
    unexpected = sorted(set(state) - set(ours))
    if unexpected:
        raise GptlabError(f"the GPT-2 weights hold tensors this model has no place for: {', '.join(unexpected[:5])}")
    return {k: state[k] for k in ours}


def load_into(model, directory) -> None:
    """Copy the GPT-2 weights in `directory` into `model` (a gptlab GPT of the same sizes)."""
    check_config(directory, model.config)
    state = from_hf(read_weights(directory), model)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            p.copy_(state[name].to(p.dtype))


def to_hf(model) -> tuple[dict[str, torch.Tensor], dict]:
    """A Hugging Face GPT2LMHeadModel state dict and config.json for `model`. With tied weights the output layer
    is left out, as `save_pretrained` does (the loader ties it back)."""
    c = model.config
    if c.head != "full":
        raise GptlabError("the model has the adaptive output head (model.head=adaptive), which GPT-2 has no "
                          "equivalent for: train with model.head=full to export it")
    check_gpt2_architecture(c, "model", "to export it, train with")
    tied = model.lm_head.weight is model.transformer.wte.weight
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and tied:
            continue
        t = tensor.detach().to("cpu", torch.float32)
        state[name] = (t.t() if name.endswith(CONV1D) else t).contiguous()
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": c.vocab_size,
        "n_positions": c.block_size, "n_ctx": c.block_size, "n_embd": c.n_embd, "n_layer": c.n_layer,
        "n_head": c.n_head, "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout, "initializer_range": c.init_std,
        "bos_token_id": 50256, "eos_token_id": 50256, "tie_word_embeddings": tied, "torch_dtype": "float32",
    }
    return state, config


# --- GPT-2 from the Hugging Face Hub or a local directory (model.init_from, init_from)

HUB_FILES = ["config.json", "model.safetensors"]


def resolve(init_from: str, key: str = "model.init_from") -> Path:
    """The local directory of `init_from`: the directory itself, or the Hub repository's files (downloaded
    through huggingface_hub's cache). Offline without a cached copy: one line that says where to put one."""
    path = Path(str(init_from)).expanduser()
    if path.is_dir():
        return path
    text = str(init_from)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:  # a path, not a Hub id (org/name)
        raise GptlabError(f"{key}={init_from}: no such directory (expected a Hugging Face GPT-2 directory with "
                          f"config.json and model.safetensors, or a Hub name such as gpt2)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise GptlabError(f"{key}={init_from} is a Hugging Face Hub name and needs huggingface_hub: pip install -e "
                          f"'.[hf]'") from None
    try:
        return Path(snapshot_download(repo_id=str(init_from), allow_patterns=HUB_FILES))
    except Exception as e:  # offline, unknown repository, no permission: all the same to the user
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise GptlabError(
            f"{key}={init_from}: could not get it from the Hugging Face Hub ({type(e).__name__}: {reason}). Put a "
            f"local copy in a directory and give its path, {key}=/path/to/{init_from}; on a machine with internet: "
            f"huggingface-cli download {init_from} {' '.join(HUB_FILES)} --local-dir {init_from}") from None


def check(init_from: str, config: GPTConfig, key: str = "model.init_from") -> Path:
    """Resolve `init_from` and check that `config` has its sizes and GPT-2's architecture (before training)."""
    directory = resolve(init_from, key)
    check_config(directory, config, key.rsplit(".", 1)[0] if "." in key else "model")
    return directory


def load_weights(model: GPT, init_from: str) -> None:
    """Copy the GPT-2 weights of `init_from` into `model`."""
    load_into(model, resolve(init_from))


def pretrained_model(init_from: str, key: str = "init_from") -> GPT:
    """A GPT with the sizes and weights of `init_from` (eval.py and generate.py without a checkpoint)."""
    directory = resolve(init_from, key)
    hf = json.loads((directory / "config.json").read_text())
    config = GPTConfig(**read_config(directory), dropout=0.0, bias=True, head="full",
                       tie_weights=bool(hf.get("tie_word_embeddings", True)))
    model = GPT(config)
    load_into(model, directory)
    return model.eval()
