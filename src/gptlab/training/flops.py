"""Peak FLOP/s of a device, the reference for model FLOPs utilisation (MFU).

GPUs: Lightning's table of datasheet peaks (lightning.fabric.utilities.throughput.get_available_flops). CPUs have
no such table (the peak depends on the cores given to the process, AVX2/AVX512/AMX and the clock), so it is
measured: large square matmuls in the dtype the run computes in, the best of a few. scripts/bench.py prints both.
"""

import functools
import time

import torch

from gptlab.model.precision import compute_dtype


def matmul_flops(dtype=torch.float32, seconds=0.3, max_size=2048, device="cpu") -> float:
    """FLOP/s of square matmuls in dtype on device: the size is grown until one matmul takes ~seconds / 8 (so an
    emulated bf16 on an AVX2 CPU, ~100× slower, still ends in about `seconds`), then the best of the rest."""
    n, best, spent = 128, 0.0, 0.0
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    while spent < seconds:
        a = torch.randn(n, n, dtype=dtype, device=device)
        b = torch.randn(n, n, dtype=dtype, device=device)
        a @ b  # warm-up: thread pool, kernel choice
        sync()
        t = time.perf_counter()
        a @ b
        sync()
        dt = time.perf_counter() - t
        spent += 2 * dt
        best = max(best, 2 * n**3 / dt)
        if dt < seconds / 8 and n < max_size:
            n *= 2
    return best


@functools.cache
def measured_cpu_peak(dtype=torch.float32) -> float:
    """This CPU's matmul FLOP/s in dtype, measured once per process (~0.5 s)."""
    return matmul_flops(dtype)


def peak_flops(device: torch.device, precision: str) -> float | None:
    """Peak FLOP/s of one device for a run in `precision`: datasheet for known GPUs, measured on CPUs."""
    dtype = compute_dtype(precision)
    if device.type == "cpu":
        return measured_cpu_peak(dtype)
    from lightning.fabric.utilities.throughput import get_available_flops

    return get_available_flops(device, dtype)
