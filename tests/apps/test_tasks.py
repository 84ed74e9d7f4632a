import json
import os
import subprocess
import sys

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir

from gptlab.apps.tasks import read_records, render, score

QA_FILE = REPO / "tests" / "fixtures" / "qa.jsonl"


def task_config(name):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return compose("generate", overrides=[f"task={name}"])


@pytest.mark.parametrize("name, prompt, metric", [
    ("qa", "Q: Who wrote Hamlet?\nA:", "squad"),
    ("summarize", "Who wrote Hamlet?\nTL;DR:", "rouge_l"),
    ("translate", "Who wrote Hamlet? =", "bleu"),
])
def test_task_prompts_follow_the_gpt2_paper(name, prompt, metric):
    cfg = task_config(name)
    assert render(cfg.task.template, "Who wrote Hamlet?") == prompt
    assert cfg.task.metric == metric
    assert cfg.stop == "\n"  # answers, summaries and translations end with their line


def test_records_are_read_with_one_or_several_references():
    records = read_records(QA_FILE)
    assert [r["references"] for r in records] == [["Paris"], ["William Shakespeare", "Shakespeare"], ["1945"]]


@pytest.mark.parametrize("bad, message", [
    ('{"input": "Who?", "reference": "me"', "not valid JSON"),
    ('{"reference": "me"}', 'a record needs a non-empty string "input"'),
    ('{"input": "Who?", "reference": []}', '"reference" must be a string or a non-empty list'),
])
def test_a_malformed_record_is_reported_with_its_line_number(tmp_path, bad, message):
    path = tmp_path / "task.jsonl"
    path.write_text('{"input": "What?", "reference": "this"}\n\n' + bad + "\n")
    with pytest.raises(ValueError, match=f"line 3: {message}"):
        read_records(path)


def test_scores_of_known_answers():
    squad = score("squad", ["Paris", "the Shakespeare", "1944"], [["Paris"], ["William Shakespeare", "Shakespeare"],
                                                                   ["1945"]])
    assert squad["exact_match"] == pytest.approx(200 / 3)  # "the" is dropped before comparing, as SQuAD does
    assert squad["f1"] == pytest.approx(200 / 3)
    assert score("rouge_l", ["the cat sat on the mat"], [["the cat sat on the mat"]])["rougeL"] == pytest.approx(100)
    # LCS "cat sat on mat": 4 of 4 predicted and of 6 reference words, F1 = 2·1·(4/6) / (1 + 4/6) = 0.8
    assert score("rouge_l", ["cat sat on mat"], [["the cat sat on the mat"]])["rougeL"] == pytest.approx(80)
    assert score("bleu", ["the cat sat on the mat today"], [["the cat sat on the mat today"]])["bleu"] == \
        pytest.approx(100)
    assert score("bleu", ["a b c d"], [["w x y z"]])["bleu"] == 0


def run_generate(*overrides, timeout=300):
    cmd = [sys.executable, str(REPO / "generate.py"), *overrides]
    return subprocess.run(cmd, cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=timeout)


def test_task_evaluation_scores_a_checkpoint_on_a_jsonl_file(tiny_run, tmp_path):
    proc = run_generate(f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}", "task=qa", f"task_file={QA_FILE}",
                        "max_new_tokens=4", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["records"] == 3 and 0 <= scores["exact_match"] <= scores["f1"] <= 100
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["input"] for r in rows] == [r["input"] for r in read_records(QA_FILE)]
    assert all("\n" not in r["prediction"] for r in rows)  # cut at the stop string
    assert "task scores (squad, 3 records): exact_match" in proc.stdout


def test_a_malformed_task_file_fails_clearly_with_its_line_number(tiny_run, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(QA_FILE.read_text() + '{"input": "Why?" "reference": "because"}\n')
    proc = run_generate(f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}", "task=qa", f"task_file={path}",
                        f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert "line 4: not valid JSON" in proc.stderr and "Traceback" not in proc.stderr
