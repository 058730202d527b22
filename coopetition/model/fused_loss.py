"""The training loss fused with the unembedding: ``cross_entropy(x @ W_U + b_U, target)`` and its gradients in one
pass over row blocks of the batch, so the ``[batch, classes]`` logits, softmax and their gradients are never
written whole and read back.

Why: at batch 256 the unembedding's 12,800-way logits are 13 MB per tensor, and the unfused step writes and re-reads
five of them (logits, log-softmax, the NLL gradient's zero-filled one-hot, the log-softmax gradient, and the
copies the matmul backward reads), plus the autograd bookkeeping around them. Here each block of ``rows`` rows is
computed into one reused buffer, turned in place into ``softmax - onehot`` and consumed at once by the two gradient
matmuls (``dx = G @ W_U^T``, ``dW_U += x^T G``, ``db_U += sum G``).

The gradients are computed in the forward (the loss is only ever backpropagated in training, and the logits are in
cache then): backward multiplies them by the incoming scalar. Recomputing the logits in backward instead (keeping
only each row's log-sum-exp) costs one more matmul and pass per block and measured slower (docs/performance.md).
Without gradients (no grad mode, or no input needing one) only the loss is computed.

The same function as the unfused loss to float rounding (float64 to ~1e-15, float32 to ~1e-6:
``tests/test_model_fused_loss.py``), not bit for bit: the softmax is formed as ``exp(l - max) / sum`` instead of
``exp(log_softmax)``, and the per-row losses are summed blockwise. Which forward may take it is the caller's rule
(``ICLTransformer.query_loss``: train mode, float32, no autocast).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

ROWS = 256  # rows per block (measured on 2 cores: 64-256 equal within noise at batch 256, smaller blocks slower)


class _UnembedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, W: Tensor, b: Tensor, target: Tensor, rows: int,
                needs: tuple[bool, bool, bool]) -> Tensor:
        n, classes = x.shape[0], W.shape[1]
        with_grad = any(needs)
        rows = max(1, min(rows, n))
        buf = x.new_empty(rows, classes)
        losses = x.new_empty(n)
        dx = dW = db = None
        if with_grad:
            dx = torch.empty_like(x) if needs[0] else None
            dW = torch.zeros_like(W) if needs[1] else None
            db = torch.zeros_like(b) if needs[2] else None
            W_t = W.t().contiguous() if needs[0] else None  # dx's matmul reads it row-major: faster than a view
            every = torch.arange(rows, device=x.device)
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            xr, tr = x[start:stop], target[start:stop]
            logits = torch.addmm(b, xr, W, out=buf[:stop - start])
            picked = logits.gather(1, tr[:, None])[:, 0]
            top = logits.amax(1, keepdim=True)
            exp = logits.sub_(top).exp_()  # in place: the block now holds exp(l - max)
            total = exp.sum(1)
            losses[start:stop] = top[:, 0] + total.log() - picked  # logsumexp - target logit
            if with_grad:
                grad = exp.mul_((1.0 / n) / total[:, None])  # softmax / n
                grad[every[:stop - start], tr] -= 1.0 / n  # - onehot / n: the mean's gradient
                if dx is not None:
                    torch.mm(grad, W_t, out=dx[start:stop])
                if dW is not None:
                    dW.addmm_(xr.t(), grad)
                if db is not None:
                    db.add_(grad.sum(0))
        ctx.grads = (dx, dW, db)  # not inputs or outputs: no save_for_backward needed
        ctx.with_grad = with_grad
        return losses.mean()

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        if not ctx.with_grad:
            raise RuntimeError("fused unembedding loss computed without gradients cannot be backpropagated")
        scaled = [None if g is None else g * grad_loss for g in ctx.grads]
        return (*scaled, None, None, None)


def unembed_cross_entropy(x: Float[Tensor, "batch d_model"], W_U: Float[Tensor, "d_model classes"],
                          b_U: Float[Tensor, " classes"], target: Int[Tensor, " batch"],
                          rows: int = ROWS) -> Float[Tensor, ""]:
    """Mean over the batch of ``cross_entropy(x @ W_U + b_U, target)``, with gradients for ``x``, ``W_U``, ``b_U``
    (the ones that require them) computed blockwise. Every target must be a valid class index."""
    grad = torch.is_grad_enabled()
    needs = (grad and x.requires_grad, grad and W_U.requires_grad, grad and b_U.requires_grad)
    return _UnembedCrossEntropy.apply(x, W_U, b_U, target, rows, needs)
