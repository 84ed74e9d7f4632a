"""`SafeCheckpointIO`, the checkpoint plugin train.py gives its Trainer: every checkpoint Lightning reads
(fit/validate/test with ckpt_path) is loaded weights-only (gptlab.model.checkpoint.load_checkpoint), and every one it
writes is written to a temporary file in the same directory, flushed to disk and renamed into place, so a crash or
a kill while saving leaves the previous file intact, never a truncated one."""

from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gptlab.model.checkpoint import load_checkpoint, save_atomic


class SafeCheckpointIO(TorchCheckpointIO):
    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None):
        # weights_only is forced: Lightning's default would unpickle anything in the file
        return load_checkpoint(path, map_location=map_location)

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO.save_checkpoint does not take storage_options")
        save_atomic(checkpoint, path)
