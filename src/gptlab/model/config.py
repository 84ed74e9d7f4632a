"""GPTConfig: the sizes and switches of a GPT, checked when it is made (one line naming the model.* key)."""

from collections.abc import Sequence
from dataclasses import dataclass

from gptlab.errors import GptlabError


@dataclass
class GPTConfig:
    vocab_size: int = 50257  # GPT-2 BPE
    block_size: int = 256  # longest context the model sees
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2
    tie_weights: bool = True  # share the token embedding with the output layer (full head only)
    head: str = "full"  # "full": one softmax over the vocabulary; "adaptive": an adaptive softmax, see GPT
    adaptive_cutoffs: tuple = (2000, 10000)  # adaptive head: token ranks where the frequency clusters start
    adaptive_div: float = 4.0  # adaptive head: each cluster is this many times narrower than the last
    init_std: float = 0.02
    loss_chunk: int = 1024  # rows of logits computed at once by the fused loss
    init_from: str | None = None  # start training from GPT-2 weights: gpt2, gpt2-medium, ... or a local HF dir
    # Speedrun levers (modded-nanogpt, nanochat); the defaults are GPT-2's. docs/benchmarks.md measures each.
    pos_emb: str = "learned"  # "learned": GPT-2's position table; "rope": rotary embeddings on q and k
    norm: str = "layernorm"  # "layernorm" or "rmsnorm" (no mean, no bias)
    qk_norm: bool = False  # RMS-normalise each head's queries and keys before attention
    mlp: str = "gelu"  # "gelu" or "relu2" (ReLU squared)
    zero_init_proj: bool = False  # output projections of attention and MLP start at zero: each block starts as identity
    value_embed: bool = False  # a second token embedding added to every layer's attention values (learned gate)
    logit_softcap: float | None = None  # full head: logits = cap · tanh(logits / cap)

    def __post_init__(self):
        for key in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "loss_chunk"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise GptlabError(f"model.{key} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise GptlabError(
                f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})"
            )
        if self.head not in ("full", "adaptive"):
            raise GptlabError(f"model.head must be 'full' or 'adaptive', got {self.head!r}")
        if not isinstance(self.adaptive_cutoffs, Sequence) or isinstance(self.adaptive_cutoffs, str):
            raise GptlabError(f"model.adaptive_cutoffs must be a list of token ranks, e.g. [2000,10000], got "
                              f"{self.adaptive_cutoffs!r}")
        cut = list(self.adaptive_cutoffs)
        if self.head == "adaptive" and (cut != sorted(set(cut)) or not 0 < cut[0] or cut[-1] >= self.vocab_size):
            raise GptlabError(f"model.adaptive_cutoffs must increase within (0, vocab_size), got {cut}")
        for key, choices in (("pos_emb", ("learned", "rope")), ("norm", ("layernorm", "rmsnorm")),
                             ("mlp", ("gelu", "relu2"))):
            if getattr(self, key) not in choices:
                raise GptlabError(f"model.{key} must be one of {', '.join(choices)}, got {getattr(self, key)!r}")
        if self.pos_emb == "rope" and (self.n_embd // self.n_head) % 2:
            raise GptlabError(f"model.pos_emb=rope needs an even head size, got n_embd/n_head = "
                              f"{self.n_embd // self.n_head}")
        if self.logit_softcap is not None and (self.head != "full" or not self.logit_softcap > 0):
            raise GptlabError(f"model.logit_softcap must be null or a positive number with model.head=full, got "
                              f"{self.logit_softcap!r} with head={self.head}")
        if not 0.0 <= self.dropout < 1.0:
            raise GptlabError(f"model.dropout must be in [0, 1), got {self.dropout!r}")
