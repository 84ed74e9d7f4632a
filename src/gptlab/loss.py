"""Cross-entropy over a large vocabulary without materialising all the logits.

With a 50k vocabulary and a small model, the output layer and its softmax cost as much as the rest of the network,
and most of that cost is memory traffic over (tokens × vocab) fp32 logits. Here the logits are made a chunk of rows
at a time, and the gradient of each chunk is taken at once, in the forward pass, while the chunk is still warm.
"""

import torch

IGNORE_INDEX = -100  # targets with this value are not scored (padding, context-only positions)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, targets, chunk):
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
            lse = torch.logsumexp(logits, dim=-1)
            valid = tc != IGNORE_INDEX
            safe_t = tc.clamp(min=0)
            total += ((lse - logits.gather(1, safe_t[:, None]).squeeze(1)) * valid).sum()
            # d(loss)/d(logits) = (softmax - onehot) / n_valid, zero on ignored rows; made in place of the logits
            g = logits.sub_(lse[:, None]).exp_()
            g[rows[: g.size(0)], safe_t] -= 1.0
            g = g.mul_((valid / n_valid)[:, None]).to(mm_dtype)
            grad_x[s : s + chunk] = g @ w
            grad_w += g.t() @ xc
        ctx.save_for_backward(grad_x, grad_w)
        ctx.weight_dtype = weight.dtype
        return total / n_valid

    @staticmethod
    def backward(ctx, grad_out):
        grad_x, grad_w = ctx.saved_tensors
        return grad_x * grad_out, (grad_w * grad_out).to(ctx.weight_dtype), None, None


def fused_linear_cross_entropy(x, weight, targets, chunk=1024):
    """Mean cross-entropy of softmax(x @ weight.T) against targets, ignoring IGNORE_INDEX; x (N, C), weight (V, C)."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(x, weight, targets, chunk)
    nll, count, _ = chunked_nll(x, weight, targets, chunk)
    return (nll / count.clamp(min=1)).float()


@torch.no_grad()
def chunked_nll(x, weight, targets, chunk=1024):
    """Summed NLL (fp64), number of scored targets, and top-1 predictions, computed chunk by chunk."""
    nll = torch.zeros((), dtype=torch.float64, device=x.device)
    count = torch.zeros((), dtype=torch.long, device=x.device)
    preds = torch.empty_like(targets)
    for s in range(0, x.size(0), chunk):
        tc = targets[s : s + chunk]
        logits = (x[s : s + chunk] @ weight.t()).float()
        valid = tc != IGNORE_INDEX
        picked = logits.gather(1, tc.clamp(min=0)[:, None]).squeeze(1)
        nll += ((torch.logsumexp(logits, dim=-1) - picked) * valid).sum(dtype=torch.float64)
        count += valid.sum()
        preds[s : s + chunk] = logits.argmax(dim=-1)
    return nll, count, preds
