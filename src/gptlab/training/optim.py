"""Optimizers that need more than torch.optim's constructors: Muon for hidden matrices with AdamW for the rest."""

import math

import torch

from gptlab.config import components
from gptlab.model.precision import cpu_has_fast_bf16

# Newton-Schulz quintic coefficients of Muon's authors (Keller Jordan): five steps take every singular value of a
# norm-1 matrix to roughly [0.7, 1.2], close enough to an orthogonal update.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalise(g, steps=5, dtype=torch.bfloat16):
    """The nearest semi-orthogonal matrix to g, roughly (U V^T of its SVD), by Newton-Schulz iterations in dtype.
    g may be a stack of same-shape matrices (batch, rows, cols): each is orthogonalised on its own, in one batched
    matmul per iteration (docs/benchmarks.md measures what this saves)."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT  # iterate on the smaller Gram matrix
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=1e-7)  # spectral norm <= Frobenius norm = 1
    shape = x.shape
    x = x.reshape(-1, *shape[-2:])
    for _ in range(steps):
        gram = x @ x.mT
        # x = a x + (b gram + c gram^2) x, with the sums fused into the matmuls
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    x = x.reshape(shape)
    return x.mT if tall else x


def ns_dtype(name, device):
    """The Newton-Schulz dtype: "auto" is bf16 on GPUs and on CPUs with bf16 hardware, fp32 on the others, where
    emulated bf16 matmuls are ~100x slower (torch.optim.Muon always uses bf16: 8.5 s a step there)."""
    if name == "auto":
        fast = device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16())
        return torch.bfloat16 if fast else torch.float32
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[name]


def evaluate(closure):
    """The loss from an optimizer step's closure (forward and backward, gradients on), or None without one."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class Muon(torch.optim.Optimizer):
    """Momentum, then each 2-D update orthogonalised (Jordan et al., 2024): torch.optim.Muon's update with the
    Newton-Schulz dtype chosen by the machine (ns_dtype). adjust_lr_fn as torch.optim.Muon's."""

    def __init__(self, params, lr, momentum, nesterov, ns_dtype, adjust_lr_fn, weight_decay=0.0, ns_steps=5):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                                      ns_steps=ns_steps, ns_dtype=ns_dtype, adjust_lr_fn=adjust_lr_fn))

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate(closure)
        for group in self.param_groups:
            same_shape = {}  # matrices of one shape are orthogonalised together, as one batch
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.lerp_(p.grad, 1 - group["momentum"])
                update = p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                same_shape.setdefault((p.shape, p.device), []).append((p, update))
            for (shape, device), pairs in same_shape.items():
                dtype = ns_dtype(group["ns_dtype"], device)
                updates = orthogonalise(torch.stack([u.to(dtype) for _, u in pairs]), group["ns_steps"], dtype)
                rows, cols = shape[:2]
                scale = 0.2 * math.sqrt(max(rows, cols)) if group["adjust_lr_fn"] == "match_rms_adamw" \
                    else math.sqrt(max(1, rows / cols))
                for (p, _), update in zip(pairs, updates, strict=True):
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.add_(update.to(p.dtype), alpha=-group["lr"] * scale)
        return loss


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the 2-D weights inside the blocks (groups named "matrix"), AdamW on everything else
    (embeddings, output layer, biases, norms), as Muon's authors recommend. One optimizer to Lightning and the
    LR scheduler: its param_groups are the two inner optimizers' groups, so schedules scale both. Its settings
    are the keys of conf/optimizer/muon.yaml, declared in gptlab/config/components.py (MuonAdamW)."""

    def __init__(self, params, **settings):
        s = self.settings = components.MuonAdamW(**settings)
        groups = [dict(g) for g in params]
        muon_groups = [g for g in groups if g.get("name") == "matrix"]
        adam_groups = [g for g in groups if g.get("name") != "matrix"]
        for g in muon_groups:
            g.setdefault("weight_decay", s.weight_decay)
        for g in adam_groups:
            g.setdefault("weight_decay", s.adamw_weight_decay)
            g["lr"] = g.get("lr", s.adamw_lr)
        self.muon = Muon(muon_groups, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov, ns_dtype=s.ns_dtype,
                         adjust_lr_fn=s.adjust_lr_fn) if muon_groups else None
        self.adamw = torch.optim.AdamW(adam_groups, lr=s.adamw_lr, betas=tuple(s.adamw_betas), fused=s.fused) \
            if adam_groups else None
        self.inner = [o for o in (self.muon, self.adamw) if o is not None]
        super().__init__([p for g in groups for p in g["params"]], {})
        self.param_groups = [g for o in self.inner for g in o.param_groups]

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate(closure)
        for o in self.inner:
            o.step()
        return loss

    def zero_grad(self, set_to_none=True):
        for o in self.inner:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {"inner": [o.state_dict() for o in self.inner]}

    def load_state_dict(self, state_dict):
        for o, s in zip(self.inner, state_dict["inner"], strict=True):
            o.load_state_dict(s)
        self.param_groups = [g for o in self.inner for g in o.param_groups]


def mup_learning_rates(optimizer, config) -> None:
    """µP (model.mup_base_width): the AdamW learning rate of the blocks' matrices (the parameter group "matrix")
    divided by the width multiplier n_embd / mup_base_width, so that their updates move each activation as much at
    every width (Tensor Programs V, Table 3: Adam, hidden weights). Muon's matrices keep theirs: an orthogonalised
    update scaled by √max(1, rows / cols), Muon's own rule, already has the spectral size µP asks of hidden
    weights at every width (Yang, Simon & Bernstein, "A spectral condition for feature learning", 2023).
    Embeddings, biases, norms and the output layer keep theirs, as µP's Adam rule has it. Call it before the
    schedule is made, which takes these as its base rates."""
    if not config.mup_base_width:
        return
    width_mult = config.n_embd / config.mup_base_width
    muon = optimizer.muon.param_groups if isinstance(optimizer, MuonAdamW) and optimizer.muon else []
    for group in optimizer.param_groups:
        if group.get("name") == "matrix" and not any(group is g for g in muon):
            group["lr"] /= width_mult
