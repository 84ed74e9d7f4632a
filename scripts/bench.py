"""The speed of gptlab on this machine, in one run: matmul peak, training through Lightning and through a bare loop,
torch.compile, evaluation and generation.

    python scripts/bench.py                      # prints the table (~5 minutes on a 2-core CPU)
    python scripts/bench.py --write docs/benchmarks.md   # and puts it there, with the command and the machine
    python scripts/bench.py --models gpt_cpu --precisions 32-true --no-compile --steps 10   # a quick look

Training rows: the default recipe (experiment=cpu_10min: batch 8 × 256, AdamW, cosine, clipping) with the model
and precision of the row. "Lightning" is train.py's own build (data module, GPTLitModule, default callbacks,
CSV logger, no validation or checkpoints in the timed steps), timed by gptlab's Throughput callback; "bare" is a
plain PyTorch loop with the same model, batches, optimizer, schedule, clipping and autocast, timed the same way.
Both run the same steps after the same warm-up. MFU: model FLOPs (GPT.flops_per_token) per second over the
matmul peak of the dtype the run computes in, measured here first.
"""

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from gptlab.apps.train import build
from gptlab.config.compose import setup
from gptlab.inference import score_windows
from gptlab.model.decode import complete
from gptlab.model.precision import compute_dtype, cpu_has_fast_bf16
from gptlab.training.callbacks import Throughput
from gptlab.training.flops import cpu_name, matmul_flops
from gptlab.training.module import param_groups

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def machine() -> str:
    flags = set()
    if Path("/proc/cpuinfo").exists():
        info = Path("/proc/cpuinfo").read_text()
        flags = set((re.search(r"flags\s*:\s*(.*)", info) or [None, ""])[1].split())
    kept = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu_name()}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads), flags: "
            f"{' '.join(kept) or 'none of avx2/avx512/amx'}; bf16 fast: {cpu_has_fast_bf16()}; {gpu}; "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def config(model, precision, steps, compile_, out):
    overrides = [f"model={model}", f"trainer.precision={precision}", f"trainer.max_steps={steps}",
                 "trainer.max_time=null", "trainer.limit_val_batches=0", "callbacks.model_checkpoint=null",
                 "callbacks.resume_checkpoint=null", "callbacks.time_budget=null", "name=bench",
                 f"paths.output_dir={out}", f"compile={str(compile_).lower()}"]
    with initialize_config_dir(version_base=None, config_dir=str(REPO / "conf")):
        return compose("train", overrides=overrides)


class StepTimes(L.Callback):
    """Wall-clock time at the end of every training step."""

    def __init__(self):
        self.t0, self.ends = time.perf_counter(), []

    def on_train_batch_end(self, *args, **kwargs):
        self.ends.append(time.perf_counter())


def lightning_run(model, precision, warm, steps, compile_, out):
    cfg = config(model, precision, warm + steps, compile_, out)
    torch.manual_seed(1337)
    dm, module, trainer = build(cfg)
    times = StepTimes()
    trainer.callbacks.append(times)
    meter = next(c for c in trainer.callbacks if isinstance(c, Throughput))
    meter.skip = warm
    times.t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    tokens = cfg.data.batch_size * module.model.config.block_size
    return dict(tps=steps * tokens / (times.ends[-1] - times.ends[warm - 1]), meter=meter.tokens_per_sec,
                first=times.ends[0] - times.t0, flops=module.model.flops_per_token(), cfg=cfg)


def bare_run(model, precision, warm, steps, compile_, out, seconds=None):
    """The same steps without Lightning. With `seconds`, stops early when the timed steps pass it: returns how
    many ran, and the Lightning run then runs as many."""
    cfg = config(model, precision, warm + steps, False, out)
    torch.manual_seed(1337)
    dm, module, _ = build(cfg)
    dm.prepare_data()
    dm.setup("fit")
    gpt = module.model
    if gpt.config.head == "adaptive":
        import numpy as np

        gpt.set_vocab_order(np.bincount(dm.ids("train"), minlength=gpt.config.vocab_size))
    if compile_:
        gpt.compile()
    opt = instantiate(cfg.optimizer)(param_groups(gpt))
    sched = instantiate(cfg.scheduler)(opt)
    dtype = compute_dtype(precision) if precision.endswith("mixed") else None
    clip = cfg.trainer.gradient_clip_val
    ends, t0 = [], time.perf_counter()
    gpt.train()
    for x, y in dm.train_dataloader():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            _, loss = gpt(x, y)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(gpt.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        loss.item()  # Lightning logs the loss every step: the same sync
        ends.append(time.perf_counter())
        done = len(ends) - warm
        if done >= steps or (seconds and done > 0 and ends[-1] - ends[warm - 1] > seconds):
            break
    tokens = x.numel()
    timed = len(ends) - warm
    return dict(tps=timed * tokens / (ends[-1] - ends[warm - 1]), steps=timed, first=ends[0] - t0,
                flops=gpt.flops_per_token(), model=gpt, dm=dm)


def eval_and_generate(model, dm, precision, seconds=10.0):
    gpt = model.eval()
    dtype = compute_dtype(precision) if precision.endswith("mixed") else None
    ids = dm.ids("valid")
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        _, count, _, _ = score_windows(gpt, ids, batch_size=32, limit_windows=64)
    eval_tps = count / (time.perf_counter() - t)
    tok = dm.encoding
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        complete(gpt, tok, "The history of", 8)  # warm-up
        t = time.perf_counter()
        n = 128
        complete(gpt, tok, "The history of", n)
    gen_tps = n / (time.perf_counter() - t)
    return eval_tps, gen_tps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["gpt_cpu", "gpt_mini"])
    p.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    p.add_argument("--warm", type=int, default=5, help="steps left out of the timing")
    p.add_argument("--steps", type=int, default=40, help="timed steps (fewer when --seconds pass first)")
    p.add_argument("--seconds", type=float, default=20.0, help="at most this long per timed bare loop")
    p.add_argument("--no-compile", action="store_true", help="leave out the compile rows")
    p.add_argument("--write", type=Path, help="put the table into this Markdown file, between bench markers")
    a = p.parse_args(argv)
    setup()
    torch.set_float32_matmul_precision("high")
    lines = [f"Machine: {machine()}", ""]
    print(lines[0], flush=True)

    peak = {dt: matmul_flops(compute_dtype(dt), seconds=3.0) for dt in ("32-true", "bf16-mixed")}
    lines += ["| matmul peak (square, up to 2048) | GFLOP/s |", "|---|---:|"]
    lines += [f"| {'fp32' if k == '32-true' else 'bf16'} | {v / 1e9:,.0f} |" for k, v in peak.items()]
    print("\n".join(lines[2:]), flush=True)

    rows = ["", "| model | precision | compile | bare tok/s | Lightning tok/s | Lightning / bare | MFU (Lightning) "
            "| first step s (Lightning) |", "|---|---|---|---:|---:|---:|---:|---:|"]
    kept = {}
    out = Path(tempfile.mkdtemp(prefix="gptlab-bench-"))
    auto = "bf16-mixed" if cpu_has_fast_bf16() else "32-true"
    plan = [(m, pr, False) for m in a.models for pr in a.precisions]
    if not a.no_compile:
        plan.append((a.models[0], auto, True))
    for model, precision, compile_ in plan:
        bare = bare_run(model, precision, a.warm, a.steps, compile_, out / "bare", a.seconds)
        lit = lightning_run(model, precision, a.warm, bare["steps"], compile_, out / f"{model}-{precision}")
        mfu = lit["tps"] * lit["flops"] / peak[precision]
        row = (f"| {model} | {precision} | {'yes' if compile_ else 'no'} | {bare['tps']:,.0f} | {lit['tps']:,.0f} | "
               f"{bare['tps'] / lit['tps']:.3f}× | {100 * mfu:.1f}% | {lit['first']:.1f} |")
        print(row, flush=True)
        rows.append(row)
        kept[(model, precision, compile_)] = bare
    rows.append("")
    rows.append("Lightning / bare: how many times longer Lightning takes per token (1.000×: no overhead). "
                f"{a.steps} timed steps after {a.warm} (fewer where {a.seconds:.0f} s passed first).")

    gen = ["", "| model | precision | eval tok/s (64 windows × 256, batch 32) | generation tok/s (KV cache, 128 "
           "tokens, batch 1) |", "|---|---|---:|---:|"]
    for (model, precision, compile_), bare in kept.items():
        if not compile_:
            e, g = eval_and_generate(bare["model"], bare["dm"], precision)
            gen.append(f"| {model} | {precision} | {e:,.0f} | {g:,.1f} |")
            print(gen[-1], flush=True)
    table = "\n".join(lines + rows + gen)
    print()
    print(table)
    if a.write:
        cmd = "python scripts/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip()
        block = f"{BEGIN}\n`{cmd.strip()}` at {commit} ({time.strftime('%Y-%m-%d')})\n\n{table}\n{END}"
        text = a.write.read_text() if a.write.exists() else ""
        if BEGIN in text and END in text:
            text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
        else:
            text += f"\n## Benchmark — `python scripts/bench.py`\n\n{block}\n"
        a.write.write_text(text)
        print(f"written to {a.write}")


if __name__ == "__main__":
    main()
