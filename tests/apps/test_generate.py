import functools
import io
import os
import subprocess
import sys

import lightning as L
import pytest
import torch
from conftest import REPO
from hydra import compose, initialize_config_dir

from gptlab.apps import generate
from gptlab.data.datamodule import WikiText2DataModule
from gptlab.data.tokenizer import Tokenizer
from gptlab.model.checkpoint import load_model
from gptlab.model.decode import TextStream, complete, generate_tokens, sample_next, top_p_filter
from gptlab.training.callbacks import SampleText
from gptlab.training.module import GPTLitModule

PROMPT = "The history of"


@pytest.fixture(scope="module")
def model(tiny_run):
    return load_model(tiny_run / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer("gpt2")


def greedy_without_cache(model, ids, n):
    """nanoGPT's decoding: the whole context (its last block_size tokens) through the model at every step."""
    idx = torch.tensor([ids])
    for _ in range(n):
        logits = model.logits(model.hidden_states(idx[:, -model.config.block_size :])[:, -1])
        idx = torch.cat([idx, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return idx[0, len(ids) :].tolist()


@pytest.mark.parametrize("prompt_tokens", [3, 100])  # 100 + 50 crosses the 128-token context
def test_greedy_decoding_with_kv_cache_matches_decoding_without_it(model, prompt_tokens):
    ids = torch.randint(0, 50000, (prompt_tokens,), generator=torch.Generator().manual_seed(prompt_tokens)).tolist()
    expected = greedy_without_cache(model, ids, 50)
    assert list(generate_tokens(model, ids, 50, temperature=0)) == expected


def test_a_prompt_longer_than_the_context_is_cropped_with_a_warning(model):
    ids = torch.randint(0, 50000, (200,), generator=torch.Generator().manual_seed(0)).tolist()
    with pytest.warns(UserWarning, match="only its last 128 tokens are used"):
        tokens = list(generate_tokens(model, ids, 3, temperature=0))
    assert tokens == greedy_without_cache(model, ids[-128:], 3)


def test_top_k_1_sampling_equals_greedy(model):
    ids = [464, 2106, 286]
    greedy = list(generate_tokens(model, ids, 20, temperature=0))
    g = torch.Generator().manual_seed(0)
    assert list(generate_tokens(model, ids, 20, temperature=1.5, top_k=1, generator=g)) == greedy
    logits = torch.randn(8, 1000, generator=g)
    assert torch.equal(sample_next(logits, temperature=1.0, top_k=1, generator=g), logits.argmax(-1, keepdim=True))


@pytest.mark.parametrize("top_p, kept", [(0.3, {1}), (0.45, {1}), (0.75, {1, 3}), (0.85, {1, 3, 2}),
                                         (0.97, {0, 1, 2, 3}), (1.0, {0, 1, 2, 3, 4})])
def test_top_p_keeps_the_fewest_most_likely_tokens_that_reach_p(top_p, kept):
    probs = torch.tensor([[0.04, 0.5, 0.15, 0.3, 0.01]])
    filtered = top_p_filter(probs.log(), top_p)
    assert set(torch.isfinite(filtered[0]).nonzero().flatten().tolist()) == kept
    draws = sample_next(probs.log().expand(4000, -1), top_p=top_p, generator=torch.Generator().manual_seed(0))
    assert set(draws.flatten().tolist()) == kept


def test_sampling_is_reproducible_from_the_seed(model):
    def sample(seed):
        g = torch.Generator().manual_seed(seed)
        return list(generate_tokens(model, [464], 10, temperature=1.0, top_p=0.9, generator=g))

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_generation_stops_before_the_end_of_text_token(model):
    first = next(generate_tokens(model, [464], 1, temperature=0))
    assert list(generate_tokens(model, [464], 10, temperature=0, eot_id=first)) == []


def test_text_stream_never_shows_half_a_character_and_cuts_at_the_stop_string(tokenizer):
    text = "snow ☃ and 日本\nnext line"
    out = io.StringIO()
    stream, shown = TextStream(tokenizer, out, stop="\nnext"), []
    for token in tokenizer.encode(text):
        stopped = stream.add(token)
        shown.append(out.getvalue())
        if stopped:
            break
    assert stopped and stream.finish() == out.getvalue() == "snow ☃ and 日本"
    assert not any("\ufffd" in s for s in shown)
    assert "\n" not in out.getvalue()  # the start of the stop string was held back, then dropped


def run_generate(*overrides, input=None, cache_dir=None, timeout=300):
    env = dict(os.environ)
    if cache_dir is not None:
        env["GPTLAB_CACHE_DIR"] = str(cache_dir)
    cmd = [sys.executable, str(REPO / "generate.py"), *overrides]
    return subprocess.run(cmd, cwd=REPO, env=env, input=input, capture_output=True, text=True, timeout=timeout)


@pytest.mark.full
def test_generate_py_streams_the_continuation_of_the_prompt(tiny_run, model, tokenizer, tmp_path):
    proc = run_generate(f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}", f"prompt={PROMPT}",
                        "max_new_tokens=12", "temperature=0", "precision=32-true", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    continuation = complete(model, tokenizer, PROMPT, 12, temperature=0)
    assert continuation
    assert PROMPT + continuation + "\n" in proc.stdout


@pytest.mark.full
def test_generate_py_with_an_empty_prompt_fails_clearly(tiny_run, tmp_path):
    proc = run_generate(f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}", "prompt=", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert "error: prompt=''" in proc.stderr and "Traceback" not in proc.stderr


def test_prompts_are_read_from_stdin_one_per_line(tiny_run, model, tokenizer, monkeypatch, capsys):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose("generate", overrides=[f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}",
                                             "max_new_tokens=5", "temperature=0", "num_samples=2"])
    monkeypatch.setattr(sys, "stdin", io.StringIO("The war\n\nIn 1990\n"))
    generate.run(cfg)
    out = capsys.readouterr().out
    for prompt in ("The war", "In 1990"):
        assert out.count(prompt + complete(model, tokenizer, prompt, 5, temperature=0) + "\n") == 2  # 2 samples
    assert out.count("--- sample 2 of 2") == 2


def test_training_writes_text_samples_at_each_validation(tiny_run):
    text = (tiny_run / "samples.txt").read_text()
    assert text.count("--- step ") == 2  # the tiny run validates at steps 3 and 6 (not the final validation)
    assert "--- step 3, val/loss" in text and "--- step 6, val/loss" in text
    assert text.count("The history of >>>") == 2


def test_text_samples_go_to_a_wandb_table(tmp_path, token_cache_dir, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_SILENT", "true")
    dm = WikiText2DataModule(cache_dir=token_cache_dir, block_size=16, batch_size=2, splits=("train", "valid"))
    module = GPTLitModule(model=dict(block_size=16, n_layer=1, n_head=1, n_embd=16),
                          optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    logger = WandbLogger(project="gptlab-test", save_dir=str(tmp_path), offline=True)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, val_check_interval=1, limit_val_batches=1, logger=logger,
                        callbacks=[SampleText(prompts=["The war"], max_new_tokens=3, temperature=0.0, top_k=None,
                                              seed=0, path=str(tmp_path / "samples.txt"), tokenizer="gpt2")],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    logger.experiment.finish()
    assert (tmp_path / "samples.txt").read_text().count("The war >>>") == 2
    tables = list(tmp_path.glob("wandb/offline-run-*/files/media/table/samples_*.table.json"))
    assert len(tables) == 2  # one per validation, each with every row so far
