"""GPT-2 weights in Hugging Face's format, in and out (issue 14). No network: the GPT-2 is a small randomly
initialised `transformers.GPT2LMHeadModel`, saved with save_pretrained."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, TINY, run_train
from safetensors.torch import load_file, save_file

from gptlab.errors import GptlabError
from gptlab.model import GPT, GPTConfig
from gptlab.model.checkpoint import load_model
from gptlab.model.decode import generate_tokens
from gptlab.model.hf import load_into
from gptlab.training.module import GPTLitModule

transformers = pytest.importorskip("transformers")  # the hf extra, in dev

NANO = {"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 128}  # the sizes of conf/model/gpt_nano.yaml


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A random GPT-2 of gpt_nano's sizes, as save_pretrained writes it (config.json, model.safetensors)."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50257, **NANO)
    model = transformers.GPT2LMHeadModel(config).eval()
    path = tmp_path_factory.mktemp("hf") / "gpt2-nano"
    model.save_pretrained(path)
    return path


def ours(hf_dir) -> GPT:
    model = GPT(GPTConfig(block_size=128, n_layer=2, n_head=2, n_embd=64, head="full", tie_weights=True)).eval()
    load_into(model, hf_dir)
    return model


def test_imported_weights_give_transformers_logits_and_greedy_text(hf_dir):
    theirs = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    model = ours(hf_dir)
    idx = torch.randint(0, 50257, (3, 100), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = theirs(idx).logits
        logits, _ = model(idx)  # logits at every position
    assert (logits.float() - ref).abs().max().item() <= 1e-5
    prompt = [464, 2106, 286]  # "The history of"
    with torch.no_grad():
        greedy = theirs.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False, pad_token_id=50256)
    mine = list(generate_tokens(model, prompt, 20, temperature=0.0))
    assert mine == greedy[0, len(prompt):].tolist()


@pytest.mark.full
def test_generate_py_and_train_py_start_from_a_local_gpt2_directory(hf_dir, tmp_path, token_cache_dir):
    theirs = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    args = [f"init_from={hf_dir}", "prompt=The history of", "temperature=0", "max_new_tokens=12", "precision=32-true",
            f"hydra.run.dir={tmp_path / 'g'}"]
    proc = subprocess.run([sys.executable, str(REPO / "generate.py"), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    with torch.no_grad():
        greedy = theirs.generate(torch.tensor([enc.encode("The history of")]), max_new_tokens=12, do_sample=False,
                                 pad_token_id=50256)
    assert proc.stdout.startswith("The history of" + enc.decode(greedy[0, 3:].tolist()).split("<|endoftext|>")[0])

    # train.py: optimizer.lr=0 keeps the imported weights, so the checkpoint holds GPT-2's own
    run = tmp_path / "run"
    run_train(run, *TINY, f"model.init_from={hf_dir}", "optimizer=adamw", "optimizer.lr=0", "trainer.max_steps=2",
              "trainer.val_check_interval=2", "trainer.precision=32-true", cache_dir=token_cache_dir)
    trained = load_model(run / "checkpoints" / "last.ckpt")
    expected = ours(hf_dir).state_dict()
    assert all(torch.equal(trained.state_dict()[k], expected[k]) for k in expected)


@pytest.mark.full
def test_wrong_sizes_a_missing_tensor_a_wrong_shape_and_offline_hub_names_are_refused(hf_dir, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "model=gpt_micro", f"model.init_from={hf_dir}",
                           f"hydra.run.dir={tmp_path / 'r'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"error: {hf_dir} holds a GPT-2 of other sizes than the model config: model.n_layer=4 (the weights: 2), "
        f"model.n_head=4 (the weights: 2), model.n_embd=128 (the weights: 64), model.block_size=256 (the weights: "
        f"128). Choose the matching model (model=gpt2 for GPT-2 small) or set those keys")
    state = load_file(str(hf_dir / "model.safetensors"))
    for name, broken, message in [
        ("missing", {k: v for k, v in state.items() if k != "transformer.h.1.attn.c_attn.weight"},
         "the GPT-2 weights lack transformer.h.1.attn.c_attn.weight"),
        ("shape", {**state, "transformer.h.0.mlp.c_fc.weight": torch.zeros(64, 128)},
         "the GPT-2 weight transformer.h.0.mlp.c_fc.weight has shape (128, 64), the model needs (256, 64)"),
    ]:
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text((hf_dir / "config.json").read_text())
        save_file({k: v.contiguous() for k, v in broken.items()}, str(d / "model.safetensors"))
        with pytest.raises(GptlabError, match=message.replace("(", r"\(").replace(")", r"\)")):
            ours(d)
    cut = tmp_path / "cut"  # a download cut short
    cut.mkdir()
    (cut / "config.json").write_text((hf_dir / "config.json").read_text())
    (cut / "model.safetensors").write_bytes((hf_dir / "model.safetensors").read_bytes()[:100_000])
    with pytest.raises(GptlabError, match=f"^{cut}/model.safetensors: not a whole safetensors file"):
        ours(cut)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    proc = subprocess.run([sys.executable, str(REPO / "eval.py"), "init_from=gpt2", f"hydra.run.dir={tmp_path / 'e'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and line.startswith("error: init_from=gpt2: could not get it from the Hugging Face "
                                                    "Hub (")
    assert "init_from=/path/to/gpt2" in line and "huggingface-cli download gpt2" in line


@pytest.mark.full
def test_export_loads_in_transformers_with_the_same_logits_and_tokenizer(tiny_run, tmp_path):
    out = tmp_path / "export"
    proc = subprocess.run([sys.executable, "-m", "gptlab.apps.export",
                           f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}", f"out={out}"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    model = load_model(tiny_run / "checkpoints" / "last.ckpt")
    idx = torch.randint(0, 50257, (2, 64), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, _ = model(idx)
        assert (logits.float() - theirs(idx).logits).abs().max().item() <= 1e-5
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    import tiktoken

    text = "The history of Homarus gammarus , 1998 : café"
    assert tokenizer(text)["input_ids"] == tiktoken.get_encoding("gpt2").encode(text)
    card = (out / "README.md").read_text()
    assert "| val/ppl |" in card and "## Training config" in card and "n_layer: 2" in card
    assert "${" not in card and f"output_dir: {tiny_run}" in card  # resolved, as the run ran
    assert "AutoModelForCausalLM.from_pretrained(" in card and "--model hf" in card
    umask = os.umask(0)
    os.umask(umask)
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}["model.safetensors"] == 0o666 & ~umask
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    again = subprocess.run([sys.executable, "-m", "gptlab.apps.export",
                            f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}", f"out={out}"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "exists and is not empty" in again.stderr
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    nowhere = subprocess.run([sys.executable, "-m", "gptlab.apps.export",  # before the checkpoint is read
                              f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}", f"out={a_file}/export"],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert nowhere.returncode == 2 and nowhere.stderr.strip() == (
        f"error: out={a_file}/export: cannot be created, {a_file} is a file")


@pytest.mark.full
def test_a_model_with_the_adaptive_head_is_not_exported(tmp_path):
    module = GPTLitModule(model=GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=64, head="adaptive"))
    ckpt = tmp_path / "adaptive.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, ckpt)
    proc = subprocess.run([sys.executable, "-m", "gptlab.apps.export", f"ckpt_path={ckpt}", f"out={tmp_path / 'o'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: the model has the adaptive output head (model.head=adaptive), which GPT-2 has no equivalent for: "
        "train with model.head=full to export it")
    assert not (tmp_path / "o").exists()
