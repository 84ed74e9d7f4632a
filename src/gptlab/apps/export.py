"""`python -m gptlab.apps.export ckpt_path=<checkpoint> out=<dir> [overwrite=true]`: a gptlab model as a Hugging Face
GPT-2 (conf/export.yaml; the keys: gptlab/config/run.py, ExportConfig).

The directory holds what `save_pretrained` writes for a GPT2LMHeadModel and GPT2Tokenizer: config.json,
model.safetensors (tied output layer stored once, as the embedding), vocab.json, merges.txt, tokenizer_config.json
and a model card (README.md) with the run's config and its validation and test scores. Then

    AutoModelForCausalLM.from_pretrained(out)   AutoTokenizer.from_pretrained(out)   lm_eval --model hf ...

A model with the adaptive output head (the default CPU recipe) has no GPT-2 equivalent: train with
model.head=full to export.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gptlab.config.validate import validate
from gptlab.errors import GptlabError


def run(cfg) -> Path:
    validate(cfg, "export")
    out = export(cfg.ckpt_path, cfg.out, cfg.overwrite)
    print(f"exported to {out}: AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return out


def export(ckpt_path, out, overwrite: bool = False) -> Path:
    from gptlab.data.tokenizer import gpt2_tokenizer_files
    from gptlab.inference import run_config
    from gptlab.model.checkpoint import load_model
    from gptlab.model.hf import to_hf

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise GptlabError(f"out={out} exists and is not empty: choose a new directory, or add overwrite=true")
    run = run_config(ckpt_path)
    tokenizer = run.get("data", {}).get("tokenizer", "gpt2") if run is not None else "gpt2"
    if tokenizer != "gpt2":
        raise GptlabError(f"the model was trained with data.tokenizer={tokenizer}; a GPT-2 export carries GPT-2's "
                          f"tokenizer, so only gpt2-tokenized models can be exported")
    model = load_model(ckpt_path)
    state, config = to_hf(model)
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise GptlabError("exporting needs safetensors: pip install -e '.[hf]'") from None
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    umask = os.umask(0)  # safetensors writes 0600: give the weights the user's usual permissions, like the rest
    os.umask(umask)
    os.chmod(out / "model.safetensors", 0o666 & ~umask)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name, data in gpt2_tokenizer_files().items():
        (out / name).write_bytes(data)
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "model_max_length": model.config.block_size, "add_prefix_space": False,
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}, indent=2) + "\n")
    (out / "README.md").write_text(model_card(ckpt_path, model, run))
    return out


def model_card(ckpt_path, model, run) -> str:
    c = model.config
    result_file = Path(ckpt_path).parent.parent / "result.json"
    result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    scores = [f"| {k} | {result[k]:.4f} |" for k in ("val/ppl", "val/word_ppl", "val/bpb", "test/ppl",
                                                      "test/word_ppl", "test/bpb") if isinstance(result.get(k), float)]
    from omegaconf import OmegaConf

    if "config" in result:  # resolved, as it ran
        config = OmegaConf.to_yaml(OmegaConf.create(result["config"]))
    else:
        config = OmegaConf.to_yaml(run) if run is not None else "(the run's .hydra/config.yaml was not found)\n"
    load = ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline", "",
            'model = AutoModelForCausalLM.from_pretrained("<this folder>")',
            'tokenizer = AutoTokenizer.from_pretrained("<this folder>")',
            'print(pipeline("text-generation", model=model, tokenizer=tokenizer)("The history of")[0]'
            '["generated_text"])', "```", "",
            "With lm-evaluation-harness (`pip install -e '.[hf]'`): `lm_eval --model hf --model_args "
            "pretrained=<this folder> --tasks wikitext`", ""]
    return "\n".join([
        "---", "library_name: transformers", "pipeline_tag: text-generation", "datasets: [wikitext]", "---", "",
        f"# A GPT trained with gptlab on WikiText-2 ({model.num_params() / 1e6:.1f}M parameters)", "",
        f"GPT-2 architecture: {c.n_layer} layers, {c.n_head} heads, width {c.n_embd}, context {c.block_size}, "
        f"GPT-2 BPE tokenizer. Exported from `{ckpt_path}` by `python -m gptlab.apps.export`.", "",
        "## Scores (the run's final validation and test, its result.json: ppl per GPT-2 token, word ppl per "
        "WikiText word, bits per UTF-8 byte)",
        "", "| metric | value |", "| --- | --- |", *(scores or ["| (no result.json next to the run) | |"]), "",
        "## How to load", "", *load, "## Training config", "", "```yaml", config.rstrip(), "```", ""])


if __name__ == "__main__":
    from gptlab.apps import commands

    commands.export()  # the one definition of the command: also the console script gptlab-export
