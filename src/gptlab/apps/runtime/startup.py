"""What the entry points do before anything else: restart the interpreter once with faster malloc settings.

glibc hands each freed block over a size threshold straight back to the kernel, so PyTorch's large CPU tensors
(activations, the 50k-row embedding gradient) are mapped again, and page-faulted in page by page, on every
training step. Telling malloc to keep freed memory (MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_) stops that:
system CPU time and wall time drop (docs/benchmarks.md, "malloc settings at start-up").
malloc reads these variables when the process starts, and `mallopt` from Python cannot raise the threshold past
32 MiB (too small for those tensors), so the only way is to re-execute the same command with them set.
"""

import os
import platform
import sys

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(4 << 30), "MALLOC_TRIM_THRESHOLD_": str(4 << 30)}


def fast_malloc():
    """Re-execute this command once with MALLOC_ENV set (values already in the environment win). Only on
    Linux with glibc, only when the running script is the command line's own (not under runpy or pytest), and
    not when GPTLAB_FAST_MALLOC=0."""
    if os.environ.get("GPTLAB_FAST_MALLOC", "1") == "0" or all(k in os.environ for k in MALLOC_ENV):
        return
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return
    argv = list(getattr(sys, "orig_argv", []))
    if not argv or argv[-len(sys.argv):] != sys.argv:  # sys.argv was replaced: not our own command line
        return
    try:
        os.execve(sys.executable, argv, {**MALLOC_ENV, **os.environ})
    except OSError:
        pass  # keep running with the default settings
