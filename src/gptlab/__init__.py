"""gptlab: train, evaluate and apply GPT language models on WikiText-2 with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
