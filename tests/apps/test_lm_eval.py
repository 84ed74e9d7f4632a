"""lm-evaluation-harness on gptlab models: the `gptlab` model class and the offline WikiText-2 task agree with
gptlab's own scoring (issue 14)."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from gptlab.apps.evaluate import lm_eval_detokenizer
from gptlab.data.wikitext import documents
from gptlab.inference import document_metrics, load_for_inference
from gptlab.model import IGNORE_INDEX

lm_eval = pytest.importorskip("lm_eval")  # the hf extra, in dev


@pytest.fixture(scope="module")
def gptlab_lm(tiny_run):
    from gptlab.apps.lm_eval import register

    return register()(ckpt_path=str(tiny_run / "checkpoints" / "last.ckpt"), precision="32-true")


def test_loglikelihood_equals_gptlabs_own_scores(gptlab_lm, tiny_run):
    from lm_eval.api.instance import Instance

    pairs = [("The history of", " the city"), ("In 1998 , the", " band released"), ("", "Robert Boulter"),
             ("The species is", " found in the north"), ("He was born in", " 1990 .")]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    results = gptlab_lm.loglikelihood(requests)
    loaded = load_for_inference(tiny_run / "checkpoints" / "last.ckpt", precision="32-true")
    tok = loaded.tokenizer
    for (context, continuation), (ll, _) in zip(pairs, results, strict=True):
        ctx = tok.encode(context) if context else [tok.eot_id]
        cont = tok.encode(continuation)
        ids = torch.tensor([ctx + cont])
        targets = ids[:, 1:].clone()
        targets[:, : len(ctx) - 1] = IGNORE_INDEX  # score the continuation only
        nll, count, _ = loaded.model.score(ids[:, :-1], targets)
        assert count == len(cont) and ll == pytest.approx(-float(nll), abs=1e-4)


@pytest.mark.full
def test_simple_evaluate_on_the_offline_wikitext_task_equals_gptlabs_document_level_scores(gptlab_lm, tiny_run,
                                                                                           data_dir, tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from gptlab.apps.lm_eval import TASKS_DIR

    out = simple_evaluate(model=gptlab_lm, tasks=["wikitext_gptlab"], limit=2,
                          task_manager=TaskManager(include_path=str(TASKS_DIR)))
    theirs = out["results"]["wikitext_gptlab"]
    pages = documents((data_dir / "wikitext-2-raw" / "wiki.test.raw").read_text("utf-8"))[:2]
    loaded = load_for_inference(tiny_run / "checkpoints" / "last.ckpt", precision="32-true")
    ours = document_metrics(loaded.model, loaded.tokenizer, pages, lm_eval_detokenizer())
    assert theirs["word_perplexity,none"] == pytest.approx(ours["word_ppl"], rel=1e-5)
    assert theirs["bits_per_byte,none"] == pytest.approx(ours["bpb"], rel=1e-5)
    assert math.isfinite(ours["word_ppl"]) and ours["documents"] == 2
    # eval.py's command line, documents=true on the first 2 articles: the same numbers
    report = tmp_path / "eval.json"
    proc = subprocess.run([sys.executable, str(REPO / "eval.py"), f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}",
                           "data=wikitext2_raw", "split=test", "documents=true", "limit_windows=2",
                           "precision=32-true", f"report={report}", f"hydra.run.dir={tmp_path / 'e'}"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    test = json.loads(report.read_text())["test"]
    assert test["word_ppl"] == pytest.approx(theirs["word_perplexity,none"], rel=1e-5) and test["documents"] == 2


@pytest.mark.full
def test_the_command_line_runs_lm_eval_with_the_gptlab_model(tiny_run, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gptlab.apps.lm_eval", "--model", "gptlab", "--model_args",
                           f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}", "--tasks", "wikitext_gptlab",
                           "--limit", "1"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wikitext_gptlab" in proc.stdout and "word_perplexity" in proc.stdout


def test_generate_until_is_gptlabs_greedy_completion_cut_at_the_stop_string(gptlab_lm, tiny_run):
    from lm_eval.api.instance import Instance

    from gptlab.model.decode import complete

    prompts = ["The history of", "In 1998 , the"]
    requests = [Instance("generate_until", {}, (p, {"until": [" the"], "max_gen_toks": 12}), i)
                for i, p in enumerate(prompts)]
    loaded = load_for_inference(tiny_run / "checkpoints" / "last.ckpt", precision="32-true")
    expected = [complete(loaded.model, loaded.tokenizer, p, 12, stop=" the", temperature=0.0) for p in prompts]
    assert gptlab_lm.generate_until(requests) == expected


@pytest.mark.full
@pytest.mark.parametrize(("args", "expected"), [
    ([], "error: lm-eval: No tasks specified, or no tasks found."),
    (["--tasks", "wikitext_gpltab"], "error: lm-eval: Tasks not found: wikitext_gpltab"),
    (["--tasks", "wikitext_gptlab", "--limit", "-1"], "error: --limit -1: expected a number ≥ 0"),
    (["--tasks", "wikitext_gptlab", "--model_args", "CKPT,tempreture=0.7"],
     "error: --model_args tempreture=0.7: not an argument of the gptlab model (ckpt_path, init_from, device, "
     "precision, batch_size, max_batch_size)"),
])
def test_a_mistake_on_the_command_line_is_one_line(tiny_run, args, expected):
    ckpt = f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}"
    args = [a.replace("CKPT", ckpt) for a in args]
    if "--model_args" not in args:
        args += ["--model_args", ckpt]
    proc = subprocess.run([sys.executable, "-m", "gptlab.apps.lm_eval", "--model", "gptlab", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(expected)


@pytest.mark.full
def test_lm_eval_with_the_hf_model_on_an_export_gives_the_gptlab_models_scores(tiny_run, tmp_path):
    """The export's README says `lm_eval --model hf`: it runs (the hf extra brings accelerate) and agrees."""
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    export = subprocess.run([sys.executable, "-m", "gptlab.apps.export", f"ckpt_path={ckpt}",
                             f"out={tmp_path / 'hf'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert export.returncode == 0, export.stderr[-3000:]
    scores = {}
    for model, args in (("hf", f"pretrained={tmp_path / 'hf'}"), ("gptlab", f"ckpt_path={ckpt},precision=32-true")):
        proc = subprocess.run([sys.executable, "-m", "gptlab.apps.lm_eval", "--model", model, "--model_args", args,
                               "--tasks", "wikitext_gptlab", "--limit", "1", "--output_path", str(tmp_path / model)],
                              cwd=REPO, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        (results,) = (tmp_path / model).rglob("results*.json")
        scores[model] = json.loads(results.read_text())["results"]["wikitext_gptlab"]["word_perplexity,none"]
    assert scores["hf"] == pytest.approx(scores["gptlab"], rel=1e-4)
