"""The CPU facts behind the default run's choices, measured in one run: bf16 vs fp32 matmul throughput (bf16
is fast only with AVX512-BF16/AMX), and the optimizer step over a gpt_cpu-sized set of parameters: AdamW's fused
kernel vs its default (foreach), and Muon (optimizer=muon: torch.optim.Muon on the block matrices, whose
Newton-Schulz iterations run in bf16, plus fused AdamW for the rest).

    python scripts/bench_ops.py
"""

import time

import torch

from gptlab.model.precision import cpu_has_fast_bf16
from gptlab.training.optim import MuonAdamW


def timed(fn, reps):
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def main():
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, fast bf16: {cpu_has_fast_bf16()}")
    a, b = torch.randn(2048, 256), torch.randn(256, 2048)
    flops = 2 * 2048 * 256 * 2048
    fp32 = flops / timed(lambda: a @ b, 5) / 1e9
    a16, b16 = a.bfloat16(), b.bfloat16()
    bf16 = flops / timed(lambda: a16 @ b16, 2) / 1e9
    print(f"matmul 2048x256 @ 256x2048: fp32 {fp32:.1f} GFLOP/s, bf16 {bf16:.1f} GFLOP/s "
          f"(bf16/fp32 ×{bf16 / fp32:.2f})")

    shapes = [(50257, 256), (2002, 256), (8000, 64), (40257, 16)] + [(768, 256), (256, 256), (1024, 256),
                                                                        (256, 1024)] * 4
    params = [torch.nn.Parameter(torch.randn(*s)) for s in shapes]
    for p in params:
        p.grad = torch.randn_like(p)
    times = {}
    for name, kw in (("foreach", {"foreach": True}), ("fused", {"fused": True})):
        opt = torch.optim.AdamW(params, lr=1e-3, **kw)
        times[name] = timed(opt.step, 5)
    n = sum(p.numel() for p in params) / 1e6
    print(f"AdamW step over {n:.1f}M parameters: foreach {times['foreach'] * 1e3:.0f} ms, fused "
          f"{times['fused'] * 1e3:.0f} ms (×{times['foreach'] / times['fused']:.1f})")
    groups = [{"params": params[4:], "name": "matrix"}, {"params": params[:4], "name": "embedding"}]
    muon = timed(MuonAdamW(groups, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0, adamw_lr=3e-3,
                           adamw_betas=(0.9, 0.95), adamw_weight_decay=0.0, adjust_lr_fn=None, ns_dtype="auto",
                           fused=True).step, 2)
    print(f"Muon + AdamW step over the same parameters: {muon * 1e3:.0f} ms (×{muon / times['fused']:.0f} fused AdamW)")


if __name__ == "__main__":
    main()
