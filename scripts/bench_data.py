"""Time the WikiText-2 data pipeline: cold prepare (verify + tokenize + cache all three splits, tokenizer load
included) into a fresh cache dir, then setup() from the warm cache with fresh DataModules.

    TIKTOKEN_CACHE_DIR=../shared/data/tiktoken-cache GPTLAB_DATA_DIR=../shared/data python scripts/bench_data.py
"""

import argparse
import os
import tempfile
import time

from gptlab.data.datamodule import WikiText2DataModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="tokens")
    parser.add_argument("--cached-runs", type=int, default=5)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
