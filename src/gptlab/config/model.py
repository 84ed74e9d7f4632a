"""GPTConfig: the sizes and switches of a GPT (conf/model/ picks values; `model.<key>=...` overrides one)."""

from dataclasses import dataclass
from typing import ClassVar, Literal

from gptlab.config.declare import COUNT_MAX, Refused, check_fields, key

SIZE = dict(ge=1, le=COUNT_MAX)


@dataclass(kw_only=True)
class GPTConfig:
    TARGET: ClassVar[str] = "gptlab.model.GPTConfig"

    # the defaults are GPT-2 small's; conf/model/ holds the other sizes
    vocab_size: int = key(50257, "tokens the model knows: set from the tokenizer by train.py", **SIZE)
    block_size: int = key(1024, "the longest context the model sees, in tokens", **SIZE)
    n_layer: int = key(12, "transformer blocks", **SIZE)
    n_head: int = key(12, "attention heads per block", **SIZE)
    n_embd: int = key(768, "width of the residual stream", **SIZE)
    dropout: float = key(0.0, "dropout after attention, MLP and embeddings", ge=0, le=0.999, arch=False)
    bias: bool = key(True, "biases in Linear and LayerNorm layers", gpt2=True)
    tie_weights: bool = key(True, "share the token embedding with the output layer (full head only)")
    head: Literal["full", "adaptive"] = key(
        "full", "output layer: one softmax over the vocabulary, or an adaptive softmax (frequent tokens at full "
                "width, rare ones in narrower clusters: a fraction of the cost with a 50k vocabulary)", gpt2="full")
    adaptive_cutoffs: tuple[int, ...] = key(
        (2000, 10000), "adaptive head: the token ranks where each narrower cluster starts", ge=1, increasing=True)
    adaptive_div: float = key(4.0, "adaptive head: each cluster is this many times narrower than the last", ge=1)
    init_std: float = key(0.02, "standard deviation of the initial weights", gt=0, arch=False)
    loss_chunk: int = key(1024, "rows of logits the fused loss computes at once (memory, not results)", **SIZE,
                          arch=False)
    init_from: str | None = key(None, "start training from GPT-2 weights: gpt2, gpt2-medium, gpt2-large, gpt2-xl "
                                      "(the Hugging Face Hub), or a local Hugging Face directory", arch=False)
    # Speedrun levers; the defaults are GPT-2's, and `gpt2=` says so where GPT-2 weights need it (model/hf.py)
    pos_emb: Literal["learned", "rope"] = key("learned", "positions: GPT-2's learned table, or rotary embeddings "
                                                         "on queries and keys", gpt2="learned")
    norm: Literal["layernorm", "rmsnorm"] = key("layernorm", "normalisation: LayerNorm, or RMSNorm (no mean, no "
                                                             "bias)", gpt2="layernorm")
    mlp: Literal["gelu", "relu2"] = key("gelu", "the MLP's activation: GELU, or ReLU squared", gpt2="gelu")
    logit_softcap: float | None = key(None, "full head: logits = cap · tanh(logits / cap)", gt=0, gpt2=None)
    mup_base_width: int | None = key(None, "µP (maximal update parametrization): the width (n_embd) whose tuned "
                                           "hyper-parameters carry over; a model m times wider scales its blocks' "
                                           "initial weights by 1/√m, their AdamW learning rate by 1/m, attention "
                                           "by 1/head size and the output by 1/m. null: standard "
                                           "parametrization", **SIZE, gpt2=None)

    def __post_init__(self):
        check_fields(self, "model.")
        if self.n_embd % self.n_head:
            raise Refused("model.n_embd", self.n_embd, f"a multiple of model.n_head={self.n_head} (each head gets "
                                                       f"n_embd / n_head dimensions)")
        if self.pos_emb == "rope" and (self.n_embd // self.n_head) % 2:
            raise Refused("model.pos_emb", self.pos_emb, f"learned: rotary embeddings need an even head size, and "
                                                         f"n_embd / n_head = {self.n_embd // self.n_head}")
        if self.head == "adaptive" and self.adaptive_cutoffs[-1] >= self.vocab_size:
            raise Refused("model.adaptive_cutoffs", list(self.adaptive_cutoffs),
                          f"ranks below model.vocab_size={self.vocab_size}")
        if self.logit_softcap is not None and self.head != "full":
            raise Refused("model.logit_softcap", self.logit_softcap, "null with model.head=adaptive (the adaptive "
                                                                     "head has no single logit vector to cap)")
