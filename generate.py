"""Generate text with a trained GPT: `python generate.py ckpt_path=<checkpoint> prompt="The history of"`; without a
prompt, one prompt per line from stdin; `task=qa task_file=<jsonl>` scores a task (see conf/generate.yaml). Installed
(`pip install .`): gptlab-generate."""

from gptlab.apps.commands import generate

if __name__ == "__main__":
    generate()  # bad input: one line `error: ...`, exit code 2; a refused single run leaves no directory
