"""Reading and writing checkpoint files safely.

`load_checkpoint` opens a file with weights-only loading: tensors and plain containers, never other pickled
objects, so a crafted checkpoint cannot run code; one that tries is refused with a clear error.
`SafeCheckpointIO` is the Lightning plugin train.py gives its Trainer: every checkpoint Lightning reads
(fit/validate/test with ckpt_path) goes through `load_checkpoint`, and every one it writes is written to a
temporary file in the same directory, flushed to disk and renamed into place, so a crash or a kill while saving
leaves the previous file intact, never a truncated one.
"""

import os
import pickle
import re
import tempfile
from pathlib import Path

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gptlab.errors import GptlabError, GptlabFileNotFoundError


class UnsafeCheckpointError(GptlabError):
    """The file holds pickled objects that weights-only loading refuses."""


def load_checkpoint(path, map_location="cpu", mmap: bool = False) -> dict:
    """The checkpoint at `path`, loaded weights-only. mmap=True maps tensors instead of reading them (cheap when
    only the hyper-parameters are wanted)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise GptlabFileNotFoundError(f"checkpoint {path} does not exist or is not a file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        what = f" (it names {found.group(1)})" if found else ""
        raise UnsafeCheckpointError(
            f"refused to load {path}: it holds Python objects other than tensors and plain data{what}, which "
            f"could run code when unpickled. gptlab loads checkpoints weights-only; use one written by gptlab."
        ) from e
    except (RuntimeError, EOFError, OSError, KeyError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise GptlabError(f"{path} is not a readable checkpoint (truncated, or not a PyTorch file): {first}") from e


class SafeCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO with weights-only reads and atomic local writes (see the module docstring)."""

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None):
        # weights_only is forced: Lightning's default would unpickle anything in the file
        return load_checkpoint(path, map_location=map_location)

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO.save_checkpoint does not take storage_options")
        save_atomic(checkpoint, path)


def save_atomic(obj, path) -> None:
    """torch.save to a temporary file next to `path`, fsync, then rename over `path` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed while saving
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # make the rename itself durable
    finally:
        Path(tmp).unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _is_local(path) -> bool:
    return isinstance(get_filesystem(path), LocalFileSystem)
