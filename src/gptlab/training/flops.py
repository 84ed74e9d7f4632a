"""Peak FLOP/s of a device, the reference for model FLOPs utilisation (MFU), and where that peak came from.

GPUs: Lightning's table of datasheet peaks (lightning.fabric.utilities.throughput.get_available_flops), and ours
(`GPU_PEAKS`) for GPUs that table misses or gives with 2:4 sparsity. CPUs have
no such table (the peak depends on the cores given to the process, AVX2/AVX512/AMX and the clock), so it is
measured: large square matmuls in the dtype the run computes in. One measurement taken while something else runs
reads low, and an MFU over a low peak reads high (a run once logged 97 %), so the peak is the best of several short
measurements, and the best ever seen on this CPU (model, threads, dtype, torch) is kept in a small JSON file under
the cache directory: a busy start-up cannot lower it. scripts/bench.py prints the measured peaks.
"""

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from gptlab.config.rundir import repo_root
from gptlab.model.precision import compute_dtype

PEAK_FILE = "matmul_peak.json"

# Dense datasheet peaks (FLOP/s) of GPUs that Lightning's table misses: an H200 names itself "NVIDIA H200" (that
# table expects "sxm1" or "nvl1" in the name, so a run logged no MFU there), and its H200 rows are the figures with
# 2:4 sparsity, twice the dense ones. The H200 SXM computes as the H100 SXM (the same GH100 at the same clocks:
# NVIDIA's H100 and H200 datasheets, 989.4 dense bf16 TFLOP/s each); the H200 NVL as its datasheet says (835.5).
# Matched in order against the device's name in lower case; "tf32" is float32 under
# torch.set_float32_matmul_precision("high"), which train.py sets.
GPU_PEAKS = {
    "h200 nvl": {torch.bfloat16: 835.5e12, torch.float16: 835.5e12, "tf32": 417.8e12, torch.float32: 60e12},
    "h200": {torch.bfloat16: 989.4e12, torch.float16: 989.4e12, "tf32": 494.7e12, torch.float32: 66.9e12},
}


def datasheet_peak(name: str, dtype: torch.dtype) -> float | None:
    """`GPU_PEAKS`' entry for the GPU called `name` computing in `dtype`, or None when it has none."""
    chip = next((c for c in GPU_PEAKS if c in name.lower()), None)
    if chip is None:
        return None
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        dtype = "tf32"
    return GPU_PEAKS[chip].get(dtype)


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


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_peak(dtype: torch.dtype, cache_dir=None, tries: int = 3) -> tuple[float, str]:
    """This CPU's matmul FLOP/s in dtype: the best of `tries` measurements and of the best kept for this CPU in
    <cache_dir>/matmul_peak.json (null: <repo>/.cache/gptlab), which is raised when beaten."""
    path = Path(cache_dir or repo_root() / ".cache" / "gptlab").expanduser() / PEAK_FILE
    machine = f"{cpu_name()}, {torch.get_num_threads()} threads, {str(dtype).removeprefix('torch.')}, " \
              f"torch {torch.__version__}"
    measured = max(matmul_flops(dtype, seconds=0.15) for _ in range(tries))
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        kept = {}
    best = max(measured, float(kept.get(machine, 0.0)))
    if best > float(kept.get(machine, 0.0)):
        kept[machine] = best
        _write_atomically(path, json.dumps(kept, indent=1, sort_keys=True))
    return best, f"best matmul measured on {machine}"


def _write_atomically(path: Path, text: str) -> None:
    """Replace path in one step, so DDP ranks writing at once leave a whole file; a read-only cache is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        pass


def peak_flops(device: torch.device, precision: str, cache_dir=None) -> tuple[float | None, str]:
    """Peak FLOP/s of one device for a run in `precision`, and where it comes from: datasheet for known GPUs,
    measured on CPUs."""
    dtype = compute_dtype(precision)
    if device.type == "cpu":
        return cpu_peak(dtype, cache_dir)
    from lightning.fabric.utilities.throughput import get_available_flops

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    flops = datasheet_peak(name, dtype) or get_available_flops(device, dtype)
    return flops, (f"datasheet peak of {name}" if flops else f"no datasheet peak for {name}: no MFU")
