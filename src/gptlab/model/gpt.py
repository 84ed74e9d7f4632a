"""A GPT language model in plain PyTorch, read top to bottom: attention, MLP, block, GPT (its config, every key declared
with its type, default and help: gptlab/config/model.py).

Knows nothing of Lightning, Hydra or logging:

    from gptlab.model import GPT, GPTConfig
    model = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=256))
    logits, _ = model(idx)
"""

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from gptlab.config.model import GPTConfig
from gptlab.model.loss import IGNORE_INDEX, adaptive_loss, adaptive_nll, capped, chunked_nll, fused_linear_cross_entropy


def norm(config):
    """The model's normalisation layer over n_embd features: LayerNorm (GPT-2) or RMSNorm."""
    return nn.RMSNorm(config.n_embd) if config.norm == "rmsnorm" else nn.LayerNorm(config.n_embd, bias=config.bias)


def rotary_tables(config):
    """cos and sin of each position's rotation angles (block_size, head_size / 2), RoFormer's frequencies."""
    half = config.n_embd // config.n_head // 2
    freq = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float32) / half)
    angles = torch.outer(torch.arange(config.block_size, dtype=torch.float32), freq)
    return angles.cos(), angles.sin()


def rotate(x, cos, sin):
    """Rotate pairs (first half, second half) of each head's features by their position's angles."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        # µP: q·k / head size, the attention logits' scale that holds as heads widen (Tensor Programs V), times
        # √(base head size) so that at the base width it is the standard 1/√(head size); None: SDPA's 1/√(head size)
        base = config.mup_base_width
        self.scale = math.sqrt(base / config.n_head) / (config.n_embd / config.n_head) if base else None

    def forward(self, x, kv_cache=None, rope=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if rope is not None:
            q, k = rotate(q, *rope), rotate(k, *rope)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)
        # With a cache, the T new queries sit at the end of the sequence: a plain causal mask would be wrong
        # unless T == 1 (one new token sees everything) or the cache was empty.
        is_causal = kv_cache is None or k.size(2) == T
        if is_causal or T == 1:
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0, scale=self.scale
            )
        else:
            offset = k.size(2) - T
            mask = torch.ones(T, k.size(2), dtype=torch.bool, device=x.device).tril(diagonal=offset)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.relu2 = config.mlp == "relu2"

    def forward(self, x):
        x = self.c_fc(x)
        x = F.relu(x).square() if self.relu2 else F.gelu(x, approximate="tanh")
        return self.dropout(self.c_proj(x))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = norm(config)
        self.mlp = MLP(config)

    def forward(self, x, kv_cache=None, rope=None):
        x = x + self.attn(self.ln_1(x), kv_cache, rope)
        return x + self.mlp(self.ln_2(x))


class KVCache:
    """Keys and values of the tokens seen so far, one per layer, for incremental decoding."""

    def __init__(self):
        self.k = self.v = None

    def update(self, k, v):
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v

    def __len__(self):
        return 0 if self.k is None else self.k.size(2)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                **({"wpe": nn.Embedding(config.block_size, config.n_embd)} if config.pos_emb == "learned" else {}),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=norm(config),
            )
        )
        if config.pos_emb == "rope":  # fixed tables, rebuilt rather than stored in checkpoints
            cos, sin = rotary_tables(config)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        if config.head == "adaptive":
            # Adaptive softmax (Grave et al., 2017): the most frequent tokens get a full-width softmax, rarer ones
            # share narrower ones behind a cluster token. With a 50k vocabulary and a small model it does the
            # output layer's work at a fraction of the cost, and still gives a normalised distribution over every
            # token. Tokens are ranked by training-set frequency (vocab_rank, set by set_vocab_order) so that the
            # clusters really hold frequent and rare tokens.
            self.lm_head = nn.AdaptiveLogSoftmaxWithLoss(
                config.n_embd, config.vocab_size, list(config.adaptive_cutoffs), div_value=config.adaptive_div
            )
            self.register_buffer("vocab_rank", torch.arange(config.vocab_size))
        else:
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.tail_share = None  # adaptive head: share of training tokens in each tail cluster (set_vocab_order)
        if config.tie_weights and config.head == "full":
            # One matrix both reads and writes tokens: fewer parameters and, at small scale, a better model.
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2: each residual projection adds to the stream, so scale it down by the number of additions.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=config.init_std / math.sqrt(2 * config.n_layer))
        # µP: the blocks' matrices start at 1/√(width multiplier) of their standard size (std ∝ 1/√fan_in), and
        # the output reads the hidden states divided by the multiplier; embeddings, norms and the output layer's
        # own weights are as at the base width (training/optim.py scales the learning rates)
        self.width_mult = config.n_embd / config.mup_base_width if config.mup_base_width else None
        if self.width_mult:
            with torch.no_grad():
                for p in self.transformer.h.parameters():
                    if p.dim() == 2:
                        p.div_(math.sqrt(self.width_mult))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)

    def num_params(self, non_embedding=False):
        """Parameters counted once (tied weights once); non_embedding leaves out the position embeddings."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        return n

    def num_block_params(self):
        """The blocks' parameters: the N of scaling laws (Kaplan et al. 2020's non-embedding count), which a
        50k-token embedding and output layer would swamp at small widths."""
        return sum(p.numel() for p in self.transformer.h.parameters())

    def flops_per_token(self, seq_len=None):
        """Training FLOPs per token (forward + backward): 6 per matmul weight plus attention's 12·L·T·d
        (PaLM, appendix B). Matmul weights are the blocks' Linear layers, counted from the modules as built, and
        the output layer."""
        c = self.config
        T = seq_len or c.block_size
        if c.head == "full":
            head = c.vocab_size * c.n_embd
        else:  # a tail cluster runs only for the tokens in it: weighted by its share of the training tokens
            share = self.tail_share or [1.0] * len(self.lm_head.tail)  # not known: every tail, an upper bound
            head = self.lm_head.head.weight.numel() + sum(
                f * sum(p.numel() for p in t.parameters()) for f, t in zip(share, self.lm_head.tail, strict=True))
        blocks = sum(m.weight.numel() for m in self.transformer.h.modules() if isinstance(m, nn.Linear))
        matmul_weights = blocks + head
        return 6 * matmul_weights + 12 * c.n_layer * T * c.n_embd

    def hidden_states(self, idx, kv_caches=None):
        """Final normalised hidden states (B, T, n_embd), before the output layer (under µP, divided by the width
        multiplier: the logits are the output layer's of these)."""
        B, T = idx.size()
        start = len(kv_caches[0]) if kv_caches else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
        x, rope = self.transformer.wte(idx), None
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(torch.arange(start, start + T, dtype=torch.long, device=idx.device))
        else:
            rope = self.rope_cos[start : start + T], self.rope_sin[start : start + T]
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, kv_caches[i] if kv_caches else None, rope)
        h = self.transformer.ln_f(x)
        return h / self.width_mult if self.width_mult else h  # µP's output multiplier, on the head's input

    @torch.no_grad()
    def set_vocab_order(self, counts):
        """Adaptive head: rank token ids by how often they occur (counts: one per token id, from training data)."""
        counts = torch.as_tensor(counts, device=self.vocab_rank.device)
        order = torch.argsort(counts, descending=True, stable=True)
        self.vocab_rank[order] = torch.arange(len(order), device=order.device)
        # each tail cluster's share of the training tokens, for flops_per_token
        ranked, bounds = counts[order].double(), self.lm_head.cutoffs  # cutoffs end with the vocabulary size
        total = ranked.sum().clamp(min=1)
        self.tail_share = [float(ranked[a:b].sum() / total) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def _head_dtype(self):
        # Scoring runs the adaptive head outside autocast, on h cast to its weights' dtype (fp32 unless the whole
        # model was cast): nn.AdaptiveLogSoftmaxWithLoss writes its clusters' outputs into one tensor of its
        # input's dtype, and exact scores want fp32. Training's loss (adaptive_loss) runs its matmuls in autocast.
        return self.lm_head.head.weight.dtype

    def logits(self, h):
        """Output scores over the vocabulary, in token-id order (log-probabilities for the adaptive head)."""
        if self.config.head == "full":
            return capped(self.lm_head(h), self.config.logit_softcap)
        with torch.autocast(h.device.type, enabled=False):
            logp = self.lm_head.log_prob(h.flatten(0, -2).to(self._head_dtype()))
        return logp[:, self.vocab_rank].view(*h.shape[:-1], -1)

    def forward(self, idx, targets=None):
        """Returns (logits, loss). With targets, the mean cross-entropy over targets != IGNORE_INDEX is computed
        without the (B, T, vocab) logits ever existing at once, and logits is None."""
        h = self.hidden_states(idx)
        if targets is None:
            return self.logits(h), None
        h, targets = h.flatten(0, 1), targets.flatten()
        if self.config.head == "full":
            return None, fused_linear_cross_entropy(h, self.lm_head.weight, targets, self.config.loss_chunk,
                                                    self.config.logit_softcap)
        keep = targets != IGNORE_INDEX
        return None, adaptive_loss(self.lm_head, h[keep], self.vocab_rank[targets[keep]])

    @torch.no_grad()
    def score(self, idx, targets):
        """Summed NLL, number of scored targets (!= IGNORE_INDEX), and whether each target is the top-1 prediction
        (False where ignored): what evaluation needs, without the (B, T, vocab) logits."""
        h, targets = self.hidden_states(idx).flatten(0, 1), targets.flatten()
        if self.config.head == "full":
            return chunked_nll(h, self.lm_head.weight, targets, self.config.loss_chunk, self.config.logit_softcap)
        ranked = torch.where(targets == IGNORE_INDEX, targets, self.vocab_rank[targets.clamp(min=0)])
        with torch.autocast(h.device.type, enabled=False):
            return adaptive_nll(self.lm_head, h.to(self._head_dtype()), ranked)


__all__ = ["GPT", "GPTConfig", "Block", "KVCache", "IGNORE_INDEX"]
