"""gptlab checkpoints on disk, in plain PyTorch: read one safely, write one atomically, make the GPT it holds, and
tell whether it fits a model config.

A checkpoint, as train.py writes it through Lightning, is a dict: "state_dict" (the GPT's weights, named
"model.<name>"), "hyper_parameters" ({"model": the GPTConfig's fields, "optimizer": its config, ...}, plain data)
and the training state that resuming reads (optimizer, loops, callbacks). Every read is weights-only: tensors and
plain containers, never other pickled objects, so a crafted checkpoint cannot run code; one that tries is refused.
Nothing named in a checkpoint is instantiated: the model is built from its plain config fields alone.

    from gptlab.model.checkpoint import load_model
    model = load_model("outputs/runs/<name>/<time>/checkpoints/last.ckpt")   # a GPT in eval mode, on the CPU
"""

import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path

import torch

from gptlab.config.declare import declared, show
from gptlab.config.model import GPTConfig
from gptlab.config.rundir import SHARDED_META, is_checkpoint
from gptlab.errors import GptlabError, GptlabFileNotFoundError
from gptlab.model.gpt import GPT


class UnsafeCheckpointError(GptlabError):
    """The file holds pickled objects that weights-only loading refuses."""


def load_checkpoint(path, map_location="cpu", mmap: bool = False) -> dict:
    """The checkpoint at `path`, loaded weights-only. mmap=True maps tensors instead of reading them (cheap when
    only the hyper-parameters, names and shapes are wanted). An FSDP sharded checkpoint, a directory, is read whole
    onto the CPU, as one dict with the whole "state_dict" (no optimizer state; mmap: weights on the meta device)."""
    path = Path(path).expanduser()
    if is_checkpoint(path) and path.is_dir():
        return _load_sharded(path, mmap)
    if not path.is_file():
        raise GptlabFileNotFoundError(f"checkpoint {path} does not exist or is not a file")
    return _read(path, map_location, mmap)


def _read(path: Path, map_location="cpu", mmap: bool = False):
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


def _load_sharded(path: Path, meta_only: bool) -> dict:
    """A sharded checkpoint, as Lightning's FSDP writes it: the training state but weights and optimizer in
    SHARDED_META, the weights (under "model.", with the optimizer's under "optimizer_<i>.") in torch.distributed's
    checkpoint format, read here into whole tensors without a process group."""
    from torch.distributed.checkpoint import CheckpointException, FileSystemReader
    from torch.distributed.checkpoint import load as load_shards

    ckpt = _read(path / SHARDED_META)
    try:
        reader = FileSystemReader(path)
        stored = {k.removeprefix("model."): m for k, m in reader.read_metadata().state_dict_metadata.items()
                  if k.startswith("model.") and hasattr(m, "size")}
        device = "meta" if meta_only else "cpu"
        state = {k: torch.empty(m.size, dtype=m.properties.dtype, device=device) for k, m in stored.items()}
        if not meta_only:
            with warnings.catch_warnings():  # one process reading every shard is what no_dist asks for
                warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
                load_shards({"model": state}, storage_reader=reader, no_dist=True)
    except (CheckpointException, RuntimeError, OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise GptlabError(f"{path} is not a readable sharded checkpoint (a shard missing or truncated): {first}") from e
    return {**ckpt, "state_dict": state}


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


# --- the model a checkpoint holds


def existing(ckpt_path, key: str = "ckpt_path") -> Path:
    if ckpt_path is None or str(ckpt_path).strip() == "":
        raise GptlabError(f"{key} is required, e.g. {key}=outputs/runs/<name>/<time>/checkpoints/last.ckpt")
    path = Path(ckpt_path).expanduser()
    if not is_checkpoint(path):
        raise GptlabFileNotFoundError(f"{key}={path} does not exist or is not a file")
    return path


def saved_config(ckpt: dict, path) -> GPTConfig:
    """The GPTConfig a checkpoint was trained with. A field this gptlab does not have is dropped when it is off
    (false, null or 0: a switch that was removed since, unused) and refused otherwise."""
    saved = (ckpt.get("hyper_parameters") or {}).get("model")
    if not isinstance(saved, dict):
        raise GptlabError(f"ckpt_path={path} is not a gptlab checkpoint (it has no model hyper-parameters)")
    known = declared(GPTConfig)
    unknown = {k: v for k, v in saved.items() if k not in known and k != "_target_"}
    if any(unknown.values()):
        used = ", ".join(f"model.{k}={show(v)}" for k, v in unknown.items() if v)
        raise GptlabError(f"ckpt_path={path} holds a model with {used}, which this version of gptlab does not have")
    return GPTConfig(**{k: v for k, v in saved.items() if k in known})


def saved_weights(ckpt: dict) -> dict[str, torch.Tensor]:
    """The GPT's weights in a checkpoint, by their names in GPT (without the LightningModule's "model.")."""
    return {k.removeprefix("model."): v for k, v in ckpt.get("state_dict", {}).items() if k.startswith("model.")}


def load_model(ckpt_path, map_location="cpu") -> GPT:
    """The GPT saved in `ckpt_path`, weights loaded, in eval mode."""
    path = existing(ckpt_path)
    ckpt = load_checkpoint(path, map_location)
    model = GPT(saved_config(ckpt, path))
    try:
        model.load_state_dict(saved_weights(ckpt))
    except RuntimeError as e:  # missing, unexpected or misshapen weights: not what its own config describes
        raise GptlabError(f"ckpt_path={path} does not hold the weights its config describes: "
                          f"{str(e).splitlines()[0]}") from e
    return model.eval()


def check_compatible(ckpt_path, config: GPTConfig, optimizer_target: str | None = None) -> None:
    """Refuse, in one line, a checkpoint that the model of `config` cannot continue from: its weights' names or
    shapes differ from that model's (built on the meta device, so it costs nothing), or a key that shapes the
    network (declared `arch`, such as model.mlp) differs; or it holds the state of another optimizer class than
    `optimizer_target`."""
    path = existing(ckpt_path)
    ckpt = load_checkpoint(path, mmap=True)  # tensors stay on disk: names and shapes are all that is read
    saved = saved_config(ckpt, path)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GPT(config).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in saved_weights(ckpt).items()}
    arch = [k for k, f in declared(GPTConfig).items() if f.metadata.get("arch")]
    fields = [f"model.{k}={show(_plain(getattr(saved, k)))} (this run: {show(_plain(getattr(config, k)))})"
              for k in arch if _plain(getattr(saved, k)) != _plain(getattr(config, k))]
    if fields or found != expected:
        weights = sorted(k for k in found.keys() | expected.keys() if found.get(k) != expected.get(k))
        what = ", ".join(fields) or f"weights {', '.join(weights[:3])}{' ...' if len(weights) > 3 else ''}"
        raise GptlabError(f"ckpt_path={path} holds a model of another architecture than this run's: {what}. Use "
                          f"the model config it was trained with (its run's .hydra/config.yaml)")
    was = ((ckpt.get("hyper_parameters") or {}).get("optimizer") or {}).get("_target_")
    if was and optimizer_target and _class_name(was) != _class_name(optimizer_target):
        raise GptlabError(f"ckpt_path={path} holds the state of optimizer {was}, this run uses {optimizer_target}: "
                          f"use the optimizer it was trained with")


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _class_name(target: str) -> str:
    """An optimizer class by its name alone: checkpoints keep the module path of their time, which can move."""
    return str(target).rsplit(".", 1)[-1]
