"""Time the WikiText-2 data pipeline: cold prepare (verify + tokenize + cache all three splits, tokenizer load
included) into a fresh cache dir, then setup() from the warm cache with fresh DataModules. With --sampler N: the
training sampler's cost per rank for a split of N windows (WikiText-103's train split: ~117M), the time to its
first index and the memory it adds, against the whole-split torch.randperm the sampler used before.

    TIKTOKEN_CACHE_DIR=../shared/data/tiktoken-cache GPTLAB_DATA_DIR=../shared/data python scripts/bench_data.py
    python scripts/bench_data.py --sampler 117000000
"""

import argparse
import multiprocessing
import os
import resource
import tempfile
import time

from gptlab.data.datamodule import WikiText2DataModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="tokens")
    parser.add_argument("--cached-runs", type=int, default=5)
    parser.add_argument("--sampler", type=int, metavar="N", help="the sampler's cost at N windows, 8 ranks")
    args = parser.parse_args()
    if args.sampler:
        for how in ("randperm", "shuffle"):  # each in a new process: its own peak memory
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                seconds, mib = pool.apply(sampler_cost, (args.sampler, how))
            print(f"{how:<9} {args.sampler:,} windows, rank 3 of 8: first index after {seconds:.3f} s, "
                  f"+{mib:,.0f} MiB peak memory")
        return
    # CPU seconds (all threads) next to wall seconds: on a busy machine wall time says little on its own
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as cache_dir:
        t0, c0 = time.perf_counter(), time.process_time()
        dm = WikiText2DataModule(cache_dir=cache_dir, variant=args.variant, download=False)
        dm.prepare_data()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        tokens = {split: st.tokens for split, st in dm.stats.items()}
        print(f"cold prepare+tokenize: {wall:.3f} s wall, {cpu:.3f} s CPU  {tokens}")
        for _ in range(args.cached_runs):
            t0, c0 = time.perf_counter(), time.process_time()
            WikiText2DataModule(cache_dir=cache_dir, variant=args.variant, download=False).setup()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            print(f"cached setup:          {wall:.3f} s wall, {cpu:.3f} s CPU")


def sampler_cost(n: int, how: str) -> tuple[float, float]:
    """Seconds to the first index of an epoch and the peak memory added (MiB), for rank 3 of 8."""
    import torch

    from gptlab.data.sampler import ResumableSampler

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if how == "randperm":  # the sampler before: a permutation of the whole split on every rank at every epoch
        order = torch.randperm(n, generator=torch.Generator().manual_seed(1))[: n - n % 8][3::8]
        next(iter(order.split(1 << 14)[0].tolist()))
    else:
        next(iter(ResumableSampler(range(n), seed=1, num_replicas=8, rank=3)))
    seconds = time.perf_counter() - t0
    return seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


if __name__ == "__main__":
    main()
