"""Checks of a training config that Lightning or PyTorch would otherwise report late, obscurely, or not at all.
Each raises GptlabError with one line saying what is wrong and what to do; train.py runs them before building the
Trainer and before loading any data."""

import torch

from gptlab.errors import GptlabError


def check_trainer(trainer_cfg: dict, precision) -> None:
    """The device kind and count exist here, and the precision is one the device runs."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    devices = trainer_cfg.get("devices", "auto")
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and cuda > 0)
    if accelerator in ("gpu", "cuda") and cuda == 0:
        raise GptlabError(f"trainer.accelerator={accelerator} but this machine has no CUDA GPU: use "
                          f"trainer.accelerator=auto or cpu")
    wanted = _device_count(devices)
    if on_gpu and wanted is not None and wanted > cuda:
        raise GptlabError(f"trainer.devices={devices} asks for {wanted} GPUs but this machine has {cuda}: set "
                          f"trainer.devices to at most {cuda} (or auto)")
    if not on_gpu and str(precision) in ("16", "16-mixed"):
        raise GptlabError(f"trainer.precision={precision} (float16 mixed precision) needs a CUDA GPU; on CPU use "
                          f"32-true, or bf16-mixed")


def _device_count(devices) -> int | None:
    """How many devices `trainer.devices` names: 2, [0, 1] and "0,1" count 2; auto and -1 (all): None."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return devices if devices > 0 else None
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str) and devices.strip() not in ("auto", "-1", ""):
        parts = [p for p in devices.split(",") if p.strip()]
        if len(parts) == 1 and parts[0].strip().isdigit():
            return int(parts[0])
        return len(parts)
    return None


def check_data_fits_model(data_block_size: int, model_block_size: int) -> None:
    if data_block_size > model_block_size:
        raise GptlabError(f"data.block_size={data_block_size} is larger than model.block_size={model_block_size}: "
                          f"the model has no positions past {model_block_size}. Leave data.block_size at its "
                          f"default (${{model.block_size}})")


def check_optimizer(module) -> None:
    """Build the optimizer and scheduler once, on the real parameters, so that a bad value (a negative learning
    rate, an unknown argument) is reported now rather than after the data is loaded."""
    try:
        module.configure_optimizers()
    except (ValueError, TypeError) as e:
        raise GptlabError(f"the optimizer or scheduler config is invalid: {e}") from e


def check_eval_block_size(cfg, model_block_size: int) -> None:
    """eval.py scores with the model's block_size: a data.block_size given larger than it is refused, not ignored
    (its default, ${model.block_size}, does not resolve there and means "the model's")."""
    from omegaconf import OmegaConf

    asked = OmegaConf.select(cfg, "data.block_size", default=None, throw_on_resolution_failure=False)
    if isinstance(asked, int) and not isinstance(asked, bool):
        check_data_fits_model(asked, model_block_size)
