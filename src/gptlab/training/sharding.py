"""An FSDP-sharded module whole again: a full copy of its weights, gathered from every rank, for text samples
during training and for the final validation and test after it."""

import warnings

from lightning.pytorch.strategies import FSDPStrategy

from gptlab.model.gpt import GPT


def full_state_dict(strategy, rank0_only: bool = True) -> dict | None:
    """The whole state dict of the strategy's FSDP-wrapped module, in CPU memory, on rank 0 (rank0_only) or on every
    rank (None on the others). Every rank must call it: the shards are gathered from all of them."""
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    full = FullStateDictConfig(offload_to_cpu=True, rank0_only=rank0_only)
    with FSDP.state_dict_type(strategy.model, StateDictType.FULL_STATE_DICT, full), warnings.catch_warnings():
        # a copy on every rank is what is asked for, not torch's "redundantly copied to CPU memory" accident
        warnings.filterwarnings("ignore", "offload_to_cpu=True and rank0_only=False", UserWarning)
        state = strategy.model.state_dict()
    return state if strategy.is_global_zero or not rank0_only else None


def gathered_model(strategy, pl_module) -> GPT | None:
    """A whole copy of an FSDP-sharded module's GPT on rank 0, on its device (None on the other ranks). Every rank
    must call it."""
    state = full_state_dict(strategy)
    if state is None:
        return None
    model = GPT(pl_module.model.config)
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    return model.to(pl_module.device).eval()


def evaluation_module(module, trainer, ckpt_path):
    """The module for trainer.validate or trainer.test after trainer.fit: `module` itself, but under FSDP a new,
    unsharded copy for each stage. Lightning sets up the module it is given again for each stage, and one it has
    wrapped keeps its blocks' FSDP units but not the root unit that holds the embeddings: loading a checkpoint into
    it fails (a "size mismatch" against the flat shards) and its own weights are this rank's shards. The copy is
    wrapped anew; its weights are the checkpoint's (ckpt_path), else the trained ones, gathered from every rank."""
    if not isinstance(trainer.strategy, FSDPStrategy):
        return module
    state = None if ckpt_path else full_state_dict(trainer.strategy, rank0_only=False)
    fresh = type(module)(**module.hparams)
    if state is not None:
        fresh.load_state_dict(state)
    return fresh
