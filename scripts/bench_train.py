"""Training-step throughput of model variants on this machine, measured in one run so ratios are comparable.

    python scripts/bench_train.py                      # the default set of variants
    python scripts/bench_train.py --steps 10 --batch 8 --variants full:4x256 adaptive:4x256

Each variant: `head:LxD[:precision]` (head full|adaptive, precision 32|bf16). Prints tokens/s of forward+backward+
AdamW step on random windows of real WikiText-2 ids, and the ratio to the first variant (the baseline).
"""

import argparse
import time

import torch

from gptlab.model import GPT, GPTConfig


def bench(head, n_layer, n_embd, precision, batch, block, steps, compile_):
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=n_layer, n_head=max(n_embd // 64, 1), n_embd=n_embd, block_size=block, head=head,
                    tie_weights=head == "full")
    model = GPT(cfg)
    if compile_:
        model.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, cfg.vocab_size, (batch, block))
    y = torch.randint(0, cfg.vocab_size, (batch, block))
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch * block / (time.perf_counter() - t), model.num_params()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--variants", nargs="+",
                   default=["full:4x256", "full:4x128", "adaptive:4x256", "adaptive:6x256", "adaptive:4x384"])
    a = p.parse_args()
    base = None
    print(f"batch {a.batch} × block {a.block}, {a.steps} timed steps, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    for v in a.variants:
        head, size, *prec = v.split(":")
        n_layer, n_embd = map(int, size.split("x"))
        tps, n = bench(head, n_layer, n_embd, prec[0] if prec else "32", a.batch, a.block, a.steps, a.compile)
        base = base or tps
        print(f"{v:<22} {n / 1e6:6.2f}M params  {tps:8.0f} tokens/s  ×{tps / base:.2f}", flush=True)


if __name__ == "__main__":
    main()
