"""Evaluate a trained GPT on WikiText-2: `python eval.py ckpt_path=<checkpoint> [split=both] [stride=64]`
(see conf/eval.yaml). Installed
(`pip install .`): gptlab-eval."""

from gptlab.apps.commands import evaluate

if __name__ == "__main__":
    evaluate()  # bad input: one line `error: ...`, exit code 2; a refused single run leaves no directory
