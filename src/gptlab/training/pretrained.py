"""Pretrained GPT-2 weights from the Hugging Face Hub or a local directory (`model.init_from` in train.py,
`init_from` in eval.py and generate.py). The format itself is gptlab.model.hf.

    model.init_from=gpt2                # gpt2, gpt2-medium, gpt2-large, gpt2-xl: downloaded once and cached
    model.init_from=/models/gpt2        # a directory as save_pretrained writes it (config.json, model.safetensors)
"""

from __future__ import annotations

from pathlib import Path

from gptlab.errors import GptlabError
from gptlab.model import GPT, GPTConfig
from gptlab.model.hf import load_into, read_config

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
    """Resolve `init_from` and check that `config` has its sizes, a full head and biases (before training)."""
    from gptlab.model.hf import check_config

    directory = resolve(init_from, key)
    check_config(directory, config, key.rsplit(".", 1)[0] if "." in key else "model")
    return directory


def load_weights(model: GPT, init_from: str) -> None:
    """Copy the GPT-2 weights of `init_from` into `model`."""
    load_into(model, resolve(init_from))


def pretrained_model(init_from: str, key: str = "init_from") -> GPT:
    """A GPT with the sizes and weights of `init_from` (eval.py and generate.py without a checkpoint)."""
    directory = resolve(init_from, key)
    import json

    hf = json.loads((directory / "config.json").read_text())
    config = GPTConfig(**read_config(directory), dropout=0.0, bias=True, head="full",
                       tie_weights=bool(hf.get("tie_word_embeddings", True)))
    model = GPT(config)
    load_into(model, directory)
    return model.eval()
