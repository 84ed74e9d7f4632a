"""Zero-shot tasks in the GPT-2 paper's style: a prompt template around the input, the model's continuation as the
answer, scored against references with torchmetrics.

The templates live in conf/task/ (qa: "Q: <question>\\nA:", summarize: "<article>\\nTL;DR:", translate:
"<sentence> ="). A task file is JSONL, one record a line: {"input": "...", "reference": "..." or ["...", ...]}.

Metrics, all on a 0-100 scale: squad (SQuAD exact match and F1), rouge_l (ROUGE-L F1, no stemming: the stemmer
needs nltk, which is not a dependency), bleu (SacreBLEU with its 13a tokenizer, computed by torchmetrics itself).
"""

import json
from pathlib import Path

from torchmetrics.text import ROUGEScore, SacreBLEUScore
from torchmetrics.text import SQuAD as SQuADScore

from gptlab.errors import GptlabError, GptlabFileNotFoundError


def render(template, text) -> str:
    """The prompt for one input. str.replace, not str.format: other braces in the template stay as they are."""
    return template.replace("{input}", text)


def read_records(path) -> list[dict]:
    """The records of a JSONL task file as {"input", "references" (a list), "line"}; blank lines are skipped. A
    malformed line is reported with its number."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise GptlabFileNotFoundError(f"task_file={path} does not exist")
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise GptlabError(f"{path}, line {n}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict) or not isinstance(record.get("input"), str) or not record["input"].strip():
                raise GptlabError(f'{path}, line {n}: a record needs a non-empty string "input"')
            refs = record.get("reference")
            refs = [refs] if isinstance(refs, str) else refs
            if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
                raise GptlabError(f'{path}, line {n}: "reference" must be a string or a non-empty list of strings')
            records.append({"input": record["input"], "references": refs, "line": n})
    if not records:
        raise GptlabError(f"task_file={path} holds no records")
    return records


def score(metric, predictions, references) -> dict:
    """Corpus scores (0-100) of predictions (strings) against references (a list of strings each)."""
    if metric == "squad":
        preds = [{"prediction_text": p, "id": str(i)} for i, p in enumerate(predictions)]
        target = [{"answers": {"text": refs, "answer_start": [0] * len(refs)}, "id": str(i)}
                  for i, refs in enumerate(references)]
        result = SQuADScore()(preds, target)
        return {"exact_match": float(result["exact_match"]), "f1": float(result["f1"])}
    if metric == "rouge_l":
        result = ROUGEScore(rouge_keys="rougeL", accumulate="best")(predictions, references)
        return {"rougeL": 100 * float(result["rougeL_fmeasure"])}
    if metric == "bleu":
        return {"bleu": 100 * float(SacreBLEUScore(tokenize="13a")(predictions, references))}
    raise ValueError(f"unknown metric {metric!r}")  # task.metric's declaration (config/run.py) lists the metrics


def evaluate_task(records, metric, predict, out_dir=None) -> dict:
    """Predict each record's answer with `predict` (input text -> answer text), score them with `metric`, print
    the scores; with out_dir, write predictions.jsonl (input, prediction, references) and scores.json there."""
    predictions = []
    for i, record in enumerate(records, 1):
        predictions.append(predict(record["input"]))
        print(f"[{i}/{len(records)}] {predictions[-1]!r}", flush=True)
    scores = score(metric, predictions, [r["references"] for r in records])
    result = {"metric": metric, "records": len(records), **scores}
    print(f"task scores ({metric}, {len(records)} records): "
          + "   ".join(f"{k} {v:.2f}" for k, v in scores.items()), flush=True)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "predictions.jsonl", "w", encoding="utf-8") as f:
            for record, prediction in zip(records, predictions, strict=True):
                row = {"input": record["input"], "prediction": prediction, "references": record["references"]}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        (out_dir / "scores.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"  written to {out_dir / 'scores.json'} and predictions.jsonl", flush=True)
    return result
