"""The CPU's peak FLOP/s, the reference of MFU: measured, and the best seen on this machine kept, so that a
measurement taken while the machine is busy cannot lower it."""

import json

import torch

from gptlab.training.flops import PEAK_FILE, cpu_peak, datasheet_peak, peak_flops


def test_the_cpu_peak_is_the_best_seen_on_this_machine(tmp_path):
    peak, source = cpu_peak(torch.float32, tmp_path, tries=1)
    kept = json.loads((tmp_path / PEAK_FILE).read_text())
    [(machine, value)] = kept.items()
    assert value == peak > 1e8 and machine in source and f"{torch.get_num_threads()} threads, float32" in machine

    kept[machine] = peak * 1000  # the best seen before (a quiet machine): a measurement now does not lower it
    (tmp_path / PEAK_FILE).write_text(json.dumps(kept))
    assert cpu_peak(torch.float32, tmp_path, tries=1)[0] == peak * 1000

    kept[machine] = 1.0  # a low one (measured while busy) is raised by a better measurement, and kept
    (tmp_path / PEAK_FILE).write_text(json.dumps(kept))
    raised, _ = cpu_peak(torch.float32, tmp_path, tries=1)
    assert raised > 1e8 and json.loads((tmp_path / PEAK_FILE).read_text())[machine] == raised


def test_the_peak_follows_the_dtype_the_run_computes_in_and_an_unreadable_cache_is_measured_again(tmp_path):
    (tmp_path / PEAK_FILE).write_text("not json")
    flops, source = peak_flops(torch.device("cpu"), "bf16-mixed", tmp_path)
    assert flops > 0 and "bfloat16" in source and "bfloat16" in (tmp_path / PEAK_FILE).read_text()


def test_h200_has_its_dense_datasheet_peak_and_other_gpus_lightnings():
    assert datasheet_peak("NVIDIA H200", torch.bfloat16) == 989.4e12  # as torch names it; Lightning's table: none
    assert datasheet_peak("NVIDIA H200 NVL", torch.float16) == 835.5e12
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        assert datasheet_peak("NVIDIA H200", torch.float32) == 494.7e12  # TF32, as train.py computes float32
    finally:
        torch.set_float32_matmul_precision(before)
    assert datasheet_peak("NVIDIA H100 80GB HBM3", torch.bfloat16) is None  # Lightning's row is right
