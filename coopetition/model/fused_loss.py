"""The training loss fused with the unembedding: ``cross_entropy(x @ W_U + b_U, target)`` and its gradients in one
pass over row blocks of the batch, so the ``[batch, classes]`` logits, softmax and their gradients are never
written whole and read back.

Why: at batch 256 the unembedding's 12,800-way logits are 13 MB per tensor, and the unfused step writes and reads
back several of them (logits, log-softmax, the NLL gradient's zero-filled one-hot, the log-softmax gradient) and
copies the bias into the logits. Here each block of ``rows`` rows is one matmul (the bias as one more weight row
against a column of ones), a log-softmax into a reused buffer (the kernel ``F.cross_entropy`` uses), and in place
``softmax - onehot``, consumed at once by the gradient matmuls (``dx = G W_U^T / n`` and
``[dW_U; db_U] += [x, 1]^T G / n``: the mean's 1/n applied to the small factor, ``db_U`` the last row).

The gradients are computed in the forward (the loss is only ever backpropagated in training, and the block is in
cache then): backward multiplies them by the incoming scalar. Recomputing the logits in backward instead (keeping
only each row's log-sum-exp) costs one more matmul and pass per block and measured ~1.3x slower
(docs/performance.md). Without gradients (no grad mode, or no input needing one) only the loss is computed.

The same function as the unfused loss to float rounding (float64 to 1e-10, float32 to ~1e-6:
``tests/test_model_fused_loss.py``), not bit for bit: the loss values come from the same log-softmax kernel, but the
gradient is summed in another order. Which forward may take it is the caller's rule (``ICLTransformer.query_loss``:
train mode, fused training kernels on, float32/float64, no autocast; ``Intervened.loss``: no hook interventions).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

ROWS = 256  # rows per block: 64-256 equal within noise at batch 256 on this 2-core machine, smaller blocks slower


class _UnembedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, W: Tensor, b: Tensor, target: Tensor, rows: int,
                needs: tuple[bool, bool, bool]) -> Tensor:
        n, d = x.shape
        rows = max(1, min(rows, n))
        # the bias as one more row of the weight, against a column of ones: the logits are one matmul with no
        # broadcast copy of b_U, and b_U's gradient comes out of dW's matmul as its last row (no column sum)
        W_b = torch.cat([W, b[None]])  # [d + 1, classes]
        x_1 = torch.cat([x, x.new_ones(n, 1)], 1)  # [n, d + 1]
        logits, log_probs = x.new_empty(rows, W.shape[1]), x.new_empty(rows, W.shape[1])
        losses = x.new_empty(n)
        with_grad = any(needs)
        dx = torch.empty_like(x) if needs[0] else None
        dW_b = x.new_empty(d + 1, W.shape[1]) if needs[1] or needs[2] else None  # the first block writes it
        x_1_mean = x_1.t() / n  # [d + 1, n]: the mean's 1/n applied to the small factor, not to the block
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            block, tr = slice(start, stop), target[start:stop]
            torch.mm(x_1[block], W_b, out=logits[:stop - start])
            torch.log_softmax(logits[:stop - start], 1, out=log_probs[:stop - start])  # F.cross_entropy's kernel
            lp = log_probs[:stop - start]
            losses[block] = -lp.gather(1, tr[:, None])[:, 0]
            if with_grad:
                grad = lp.exp_()  # softmax, in place
                grad[torch.arange(stop - start, device=x.device), tr] -= 1.0  # - onehot
                if dx is not None:
                    torch.mm(grad, W.t(), out=dx[block])
                if dW_b is not None and start == 0:
                    torch.mm(x_1_mean[:, block], grad, out=dW_b)
                elif dW_b is not None:
                    dW_b.addmm_(x_1_mean[:, block], grad)
        if dx is not None:
            dx.div_(n)
        ctx.grads = (dx, None if dW_b is None or not needs[1] else dW_b[:d],
                     None if dW_b is None or not needs[2] else dW_b[d])
        ctx.with_grad = with_grad
        return losses.mean()

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        if not ctx.with_grad:
            raise RuntimeError("fused unembedding loss computed without gradients cannot be backpropagated")
        if grad_loss.device.type == "cpu" and grad_loss.item() == 1.0:  # the usual case: x * 1.0 is x, skip the pass
            return (*ctx.grads, None, None, None)
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
