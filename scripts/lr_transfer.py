"""Does the best learning rate found on a narrow model stay the best on wider ones? The same AdamW learning-rate
sweep at several widths, under standard parametrization and under µP (model.mup_base_width = the narrowest width),
short fixed-step runs on real WikiText-2; prints each curve's optimum and draws the figure of docs/benchmarks.md.

    python scripts/lr_transfer.py --out docs/figures/lr_transfer.png

Each run: a GPT of 2 blocks and 2 heads (the head size grows with the width, so µP's attention scaling is in play),
adaptive output head, AdamW (betas 0.9, 0.95, no weight decay), `--steps` steps of `--batch` random windows of the
training split (the same windows for every run), then the mean loss over the first `--eval` windows of the
validation split.
"""

import argparse
import math
import time

import numpy as np
import torch

from gptlab.data.corpus import WikiText2
from gptlab.model.gpt import GPT, GPTConfig
from gptlab.training.module import param_groups
from gptlab.training.optim import mup_learning_rates


def windows(ids: np.ndarray, starts, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.from_numpy(np.stack([ids[s : s + block + 1] for s in starts]).astype(np.int64))
    return w[:, :-1], w[:, 1:]


def train_and_score(width, base, lr, data, args) -> float:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=data["vocab"], block_size=args.block, n_layer=2, n_head=2, n_embd=width,
                       head="adaptive", tie_weights=False, mup_base_width=base)
    model = GPT(config)
    model.set_vocab_order(data["counts"])
    optimizer = torch.optim.AdamW(param_groups(model), lr=lr, betas=(0.9, 0.95), weight_decay=0.0, fused=True)
    mup_learning_rates(optimizer, config)
    for x, y in data["batches"]:
        _, loss = model(x, y)
        if not math.isfinite(loss.item()):
            return math.inf
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        nll, count, _ = model.score(*data["eval"])
    return nll.item() / count.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3 * 2 ** k for k in range(6)])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--eval", type=int, default=64)
    parser.add_argument("--out", default=None, help="the figure (png, pdf or svg)")
    args = parser.parse_args()
    corpus = WikiText2(splits=["train", "valid"])
    train, valid = corpus.ids("train"), corpus.ids("valid")
    g = np.random.default_rng(0)
    data = {"vocab": corpus.vocab_size, "counts": np.bincount(train, minlength=corpus.vocab_size),
            "batches": [windows(train, g.integers(0, len(train) - args.block - 1, args.batch), args.block)
                        for _ in range(args.steps)],
            "eval": windows(valid, range(0, args.eval * args.block, args.block), args.block)}
    results = {}
    for name, base in (("SP", None), ("µP", min(args.widths))):
        for width in args.widths:
            t = time.perf_counter()
            losses = [train_and_score(width, base, lr, data, args) for lr in args.lrs]
            results[name, width] = losses
            best = min(range(len(losses)), key=losses.__getitem__)
            scores = "  ".join(f"{lr:.2g}: {v:.3f}" for lr, v in zip(args.lrs, losses, strict=True))
            print(f"{name} width {width:>4}: {scores}   best lr {args.lrs[best]:.2g} (loss {losses[best]:.3f}), "
                  f"{time.perf_counter() - t:.0f} s", flush=True)
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True, layout="constrained")
        for ax, name in zip(axes, ("SP", "µP"), strict=True):
            for width in args.widths:
                losses = results[name, width]
                ax.plot(args.lrs, losses, "o-", label=f"width {width}")
                best = min(range(len(losses)), key=losses.__getitem__)
                ax.plot(args.lrs[best], losses[best], "k*", ms=12)
            ax.set(xscale="log", xlabel="AdamW learning rate", title=f"{name}: validation loss after "
                   f"{args.steps} steps (★ the best)")
            ax.legend()
        axes[0].set_ylabel("validation loss (nats per token)")
        finite = [v for losses in results.values() for v in losses if math.isfinite(v)]
        axes[0].set_ylim(min(finite) - 0.1, min(max(finite), min(finite) + 2.5))
        fig.savefig(args.out, dpi=130)
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
