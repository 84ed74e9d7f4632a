"""Cross-entropy over a large vocabulary without materialising all the logits.

With a 50k vocabulary and a small model, the output layer and its softmax cost as much as the rest of the network,
and most of that cost is memory traffic over (tokens × vocab) fp32 logits. Here the logits are made a chunk of rows
at a time, and the gradient of each chunk is taken at once, in the forward pass, while the chunk is still warm.
"""

import torch

IGNORE_INDEX = -100  # targets with this value are not scored (padding, context-only positions)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, targets, chunk, softcap):
        dev = x.device.type
        mm_dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        xm, w = x.to(mm_dtype), weight.to(mm_dtype)  # cast once, not once per chunk
        n_valid = (targets != IGNORE_INDEX).sum().clamp(min=1)
        grad_x = torch.empty_like(x)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        rows = torch.arange(chunk, device=x.device)
        for s in range(0, x.size(0), chunk):
            xc, tc = xm[s : s + chunk], targets[s : s + chunk]
            logits = (xc @ w.t()).float()  # the matmul runs in the autocast dtype, the softmax in fp32
            if softcap:
                logits = logits.div_(softcap).tanh_()
                dcap = 1.0 - logits.square()  # d(cap · tanh(z / cap)) / dz
                logits = logits.mul_(softcap)
            lse = torch.logsumexp(logits, dim=-1)
            valid = tc != IGNORE_INDEX
            safe_t = tc.clamp(min=0)
            total += ((lse - logits.gather(1, safe_t[:, None]).squeeze(1)) * valid).sum()
            # d(loss)/d(logits) = (softmax - onehot) / n_valid, zero on ignored rows; made in place of the logits.
            # In fp16 the 1 / n_valid comes after the matmuls, in fp32: a token's probability over thousands of
            # targets (2e-5 / 2048) is below fp16's smallest number, and the loss scale comes only in backward
            late = mm_dtype == torch.float16
            g = logits.sub_(lse[:, None]).exp_()
            g[rows[: g.size(0)], safe_t] -= 1.0
            g = g.mul_(valid[:, None] if late else (valid / n_valid)[:, None])
            g = (g.mul_(dcap) if softcap else g).to(mm_dtype)
            if late:
                grad_x[s : s + chunk] = (g @ w).float() / n_valid
                grad_w += (g.t() @ xc).float() / n_valid
            else:
                grad_x[s : s + chunk] = g @ w
                grad_w += g.t() @ xc
        ctx.save_for_backward(grad_x, grad_w)
        ctx.weight_dtype = weight.dtype
        return total / n_valid

    @staticmethod
    def backward(ctx, grad_out):
        grad_x, grad_w = ctx.saved_tensors
        return grad_x * grad_out, (grad_w * grad_out).to(ctx.weight_dtype), None, None, None


def capped(logits, softcap):
    """Soft-capped logits: softcap · tanh(logits / softcap) (none: unchanged)."""
    return softcap * torch.tanh(logits / softcap) if softcap else logits


def fused_linear_cross_entropy(x, weight, targets, chunk=1024, softcap=None):
    """Mean cross-entropy of softmax(x @ weight.T) against targets, ignoring IGNORE_INDEX; x (N, C), weight (V, C).
    softcap: the logits are softcap · tanh(logits / softcap)."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(x, weight, targets, chunk, softcap)
    nll, count, _ = chunked_nll(x, weight, targets, chunk, softcap)
    return (nll / count.clamp(min=1)).float()


@torch.no_grad()
def chunked_nll(x, weight, targets, chunk=1024, softcap=None):
    """Summed NLL (fp64), number of scored targets, and whether each target is the top-1 prediction (False where
    ignored), computed chunk by chunk."""
    nll = torch.zeros((), dtype=torch.float64, device=x.device)
    count = torch.zeros((), dtype=torch.long, device=x.device)
    correct = torch.empty_like(targets, dtype=torch.bool)
    for s in range(0, x.size(0), chunk):
        tc = targets[s : s + chunk]
        logits = capped((x[s : s + chunk] @ weight.t()).float(), softcap)
        valid = tc != IGNORE_INDEX
        picked = logits.gather(1, tc.clamp(min=0)[:, None]).squeeze(1)
        nll += ((torch.logsumexp(logits, dim=-1) - picked) * valid).sum(dtype=torch.float64)
        count += valid.sum()
        correct[s : s + chunk] = (logits.argmax(dim=-1) == tc) & valid
    return nll, count, correct


def adaptive_loss(head, x, targets):
    """Mean NLL of an nn.AdaptiveLogSoftmaxWithLoss head (targets in its own class order, none ignored): its
    forward's loss, with the matmuls in the autocast dtype where autocast is on (the module's own forward needs one
    dtype throughout, and in fp32 its matmuls are the slow part of a bf16 CPU step) and the log-softmaxes in fp32."""
    head_logp = torch.log_softmax(head.head(x).float(), dim=-1)
    short = head.shortlist_size
    logp = head_logp.gather(1, targets.clamp(max=short - 1)[:, None]).squeeze(1)  # right for shortlist targets
    for i, (lo, hi) in enumerate(zip(head.cutoffs[:-1], head.cutoffs[1:], strict=True)):
        rows = ((targets >= lo) & (targets < hi)).nonzero().squeeze(1)
        if len(rows) == 0:
            continue  # as the module: a cluster no target is in is not computed
        tail_logp = torch.log_softmax(head.tail[i](x[rows]).float(), dim=-1)
        in_cluster = tail_logp.gather(1, (targets[rows] - lo)[:, None]).squeeze(1)
        logp = logp.index_put((rows,), head_logp[rows, short + i] + in_cluster)
    return -logp.mean()


@torch.no_grad()
def adaptive_nll(head, x, targets, chunk=128):
    """Summed NLL (fp64), number of scored targets, and whether each target is the top-1 prediction, of an
    nn.AdaptiveLogSoftmaxWithLoss head (targets in its own class order). Exact, like head.log_prob + argmax,
    without making the (rows × vocab) log-probabilities: a tail cluster is computed for the rows whose target is
    in it, and for the few rows whose target beats every token seen so far but not the cluster's probability
    (no token in a cluster is likelier than the cluster itself), a chunk of rows at a time."""
    valid = targets != IGNORE_INDEX
    t = targets.clamp(min=0)
    head_logp = torch.log_softmax(head.head(x).float(), dim=-1)
    short = head.shortlist_size
    best = head_logp[:, :short].max(dim=-1).values  # the likeliest token seen so far, per row
    target_logp = head_logp.gather(1, t.clamp(max=short - 1)[:, None]).squeeze(1)  # right for shortlist targets
    bounds = [0, *head.cutoffs]  # head.cutoffs ends with the vocabulary size

    def visit(i, rows, with_target):
        lo, hi = bounds[i + 1], bounds[i + 2]
        for r in rows.split(chunk):  # a chunk of (rows × cluster size) logits stays in cache
            logits = head.tail[i](x[r]).float()
            target_logit = logits.gather(1, (t[r] - lo).clamp(0, hi - lo - 1)[:, None]).squeeze(1)
            top = logits.max(dim=-1).values
            lse = top + logits.sub_(top[:, None]).exp_().sum(dim=-1).log_()  # logsumexp, in place
            cluster_logp = head_logp[r, short + i]
            best[r] = torch.maximum(best[r], cluster_logp + top - lse)
            if with_target:
                target_logp[r] = cluster_logp + target_logit - lse

    in_cluster = [valid & (t >= bounds[i + 1]) & (t < bounds[i + 2]) for i in range(len(head.tail))]
    for i, mine in enumerate(in_cluster):
        visit(i, mine.nonzero().squeeze(1), True)
    for i, mine in enumerate(in_cluster):  # can another cluster still hold a likelier token than the target?
        open_ = valid & ~mine & (best <= target_logp) & (head_logp[:, short + i] > target_logp)
        visit(i, open_.nonzero().squeeze(1), False)
    nll = -(target_logp.double() * valid).sum()
    return nll, valid.sum(), valid & (best <= target_logp)
