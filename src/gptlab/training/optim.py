"""Optimizers that need more than torch.optim's constructors: Muon for hidden matrices with AdamW for the rest."""

import torch


class MuonAdamW(torch.optim.Optimizer):
    """torch.optim.Muon on the 2-D weights inside the blocks (groups named "matrix"), AdamW on everything else
    (embeddings, output layer, biases, norms), as Muon's authors recommend. One optimizer to Lightning and the
    LR scheduler: its param_groups are the two inner optimizers' groups, so schedules scale both."""

    def __init__(self, params, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0,
                 adamw_lr=3e-3, adamw_betas=(0.9, 0.95), adamw_weight_decay=0.0, adjust_lr_fn=None, fused=None):
        groups = [dict(g) for g in params]
        muon_groups = [g for g in groups if g.get("name") == "matrix"]
        adam_groups = [g for g in groups if g.get("name") != "matrix"]
        for g in muon_groups:
            g.setdefault("weight_decay", weight_decay)
        for g in adam_groups:
            g.setdefault("weight_decay", adamw_weight_decay)
            g["lr"] = g.get("lr", adamw_lr)
        self.muon = torch.optim.Muon(muon_groups, lr=lr, momentum=momentum, nesterov=nesterov,
                                     adjust_lr_fn=adjust_lr_fn) if muon_groups else None
        self.adamw = torch.optim.AdamW(adam_groups, lr=adamw_lr, betas=tuple(adamw_betas), fused=fused) \
            if adam_groups else None
        self.inner = [o for o in (self.muon, self.adamw) if o is not None]
        super().__init__([p for g in groups for p in g["params"]], {})
        self.param_groups = [g for o in self.inner for g in o.param_groups]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
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
