"""Train a GPT on WikiText-2: `python train.py model=gpt_mini trainer.devices=4` (see conf/train.yaml). Installed
(`pip install .`): gptlab-train."""

from gptlab.apps.commands import train

if __name__ == "__main__":
    train()  # bad input: one line `error: ...`, exit code 2; a refused single run leaves no directory
