"""Precision and device: the one place that decides them, for training (train.py) and inference (eval.py,
generate.py, notebooks).

`precision: auto` picks bf16-mixed where bf16 is fast (CUDA GPUs with bf16, CPUs with AVX512-BF16 or AMX),
16-mixed on older GPUs, and 32-true on other CPUs, where bf16 is emulated and ~100× slower than fp32.
GPTLAB_CPU_BF16=1 or 0 overrides the CPU detection, so one machine can take the other kind's path (tests, CI).
"""

import contextlib
import functools
import os
import typing

import torch

from gptlab.config.run import process_count
from gptlab.config.trainer import Precision
from gptlab.errors import GptlabError

CPU_BF16_ENV = "GPTLAB_CPU_BF16"
DTYPES = {"bf16": torch.bfloat16, "16": torch.float16, "32": torch.float32, "64": torch.float64}


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls in hardware (AVX512-BF16 or AMX); GPTLAB_CPU_BF16=0|1 overrides."""
    forced = os.environ.get(CPU_BF16_ENV)
    if forced is not None and forced.strip() != "":
        if forced.strip() not in ("0", "1"):
            raise GptlabError(f"{CPU_BF16_ENV}={forced!r}: set it to 1 (use bf16 on this CPU), 0 (do not), or unset "
                              f"it to detect")
        return forced.strip() == "1"
    return _cpuinfo_has_bf16()


@functools.cache
def _cpuinfo_has_bf16() -> bool:
    """The CPU's flags, read once per process (Muon's optimizer step asks every step)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def compute_dtype(precision) -> torch.dtype:
    """The dtype a run in a (resolved) Lightning precision computes in: bf16-mixed → bfloat16, 32-true → float32."""
    return DTYPES.get(str(precision).partition("-")[0], torch.float32)


def resolve_precision(precision, accelerator="auto") -> str:
    """A Lightning precision string; `auto` resolved for `accelerator` (auto, cpu, gpu, cuda)."""
    if str(precision) != "auto":
        return str(precision)
    if str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        # bf16 in the GPU's hardware (Ampere and later): torch counts the emulation V100s and T4s have as support
        return "bf16-mixed" if torch.cuda.is_bf16_supported(including_emulation=False) else "16-mixed"
    return "bf16-mixed" if cpu_has_fast_bf16() else "32-true"


def resolve_device(device="auto") -> torch.device:
    """`auto`: the GPU when there is one, else the CPU. A CUDA device on a machine without one is refused."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(str(device))
    except RuntimeError:
        raise GptlabError(f"device={device}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GptlabError(f"device={device} but this machine has no CUDA GPU: use device=auto or cpu")
    return dev


def apply_precision(model, precision, device):
    """A Lightning precision string applied for inference on `device`: returns the model (cast for "-true"
    precisions) and a function giving the autocast context (a no-op for the others)."""
    precision = resolve_precision(precision, device.type)
    base, _, mode = precision.partition("-")
    if base not in DTYPES or mode not in ("", "true", "mixed"):
        inference = [p for p in typing.get_args(Precision) if str(p).partition("-")[0] in (*DTYPES, "auto")]
        raise GptlabError(f"precision={precision}: expected one of {', '.join(map(str, inference))} for inference")
    check_float16_device(precision, device.type)
    if mode == "mixed" or (mode == "" and base in ("16", "bf16")):  # Lightning reads "16" as "16-mixed"
        return model, lambda: torch.autocast(device.type, dtype=DTYPES[base])
    return model.to(DTYPES[base]), contextlib.nullcontext


def check_float16_device(precision, device_type: str, key: str = "precision") -> None:
    """float16 (16-mixed, 16-true) runs on CUDA only."""
    if str(precision).startswith("16") and device_type != "cuda":
        raise GptlabError(f"{key}={precision} (float16) needs a CUDA GPU; on CPU use 32-true or bf16-mixed")


def inference_device(device, precision) -> torch.device:
    """The device eval.py and generate.py run on, refused in one line when it or the precision is not to be had
    here."""
    dev = resolve_device(device)
    check_float16_device(resolve_precision(precision, dev.type), dev.type)
    return dev


def trainer_device(accelerator) -> torch.device:
    """The kind of device a training config's trainer.accelerator trains on here (its first one)."""
    cuda = torch.cuda.is_available()
    on_gpu = str(accelerator) in ("gpu", "cuda") or (str(accelerator) == "auto" and cuda)
    return torch.device("cuda", 0) if on_gpu else torch.device("cpu")


def check_trainer_machine(accelerator, devices, precision) -> None:
    """The device kind and count a training config asks for exist here, and the precision is one they run."""
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    accelerator = str(accelerator)
    on_gpu = trainer_device(accelerator).type == "cuda"
    if accelerator in ("gpu", "cuda") and cuda == 0:
        raise GptlabError(f"trainer.accelerator={accelerator} but this machine has no CUDA GPU: use "
                          f"trainer.accelerator=auto or cpu")
    wanted = process_count(devices, 1)
    if on_gpu and wanted is not None and wanted > cuda:
        raise GptlabError(f"trainer.devices={devices} asks for {wanted} GPUs but this machine has {cuda}: set "
                          f"trainer.devices to at most {cuda} (or auto)")
    if not on_gpu:
        check_float16_device(resolve_precision(precision, accelerator), "cpu", "trainer.precision")
