"""A 2-layer ICLTransformer with weights set by hand: an induction circuit with known answers.

Residual-stream directions are orthonormal and orthogonal to the all-ones vector, so LayerNorm's centring leaves
them alone and only rescales. Exemplar of class c is the one-hot e_c (8 classes, ctx 2: x1 y1 x2 y2 q).

- Embeddings: exemplar e_c -> E[c] + EX (EX via the exemplar bias), label c -> L[c] + LAB, position p -> P[p].
- Layer 0, heads 0-2: previous-token heads (query P[t] matches key P[t-1]); each copies the previous token's
  exemplar identity E[c] into PREV[c] at a third of the strength, so losing (or resampling) any one is harmless.
- Layer 1, head 1 (``INDUCTION``): query E[c_q] + EX matches key PREV[c] + LAB, i.e. the label whose preceding
  exemplar is of the query's class; it copies that label's L[c] into the query, and the unembedding reads L[c].
- Every other head attends uniformly and writes a constant into a spare direction nothing reads (harmless).
So the model does perfect ICL: Flip accuracy 1, CIWL accuracy at chance.

``handmade_model(direct=k)`` adds a direct in-weights path: the unembedding also reads the query's exemplar identity
E[c] as label c with weight k. Small enough for the induction head to win while it runs, it decides the answer once
the heads are gone: the query's own class label (Train and CIWL right, Flip wrong).
"""

from __future__ import annotations

import torch

from coopetition.store.run import EvalData
from coopetition.model import ICLTransformer, ModelConfig
from coopetition.task.sampler import ClassPool, sample_sequences
from coopetition.task.sequence import SequenceSpec

N_CLASSES = 8
D_MODEL, N_HEADS = 48, 4
D_HEAD = D_MODEL // N_HEADS
INDUCTION = (1, 1)
PREV_HEADS = ((0, 0), (0, 1), (0, 2))


def _basis() -> torch.Tensor:
    """47 orthonormal rows orthogonal to the all-ones vector."""
    gen = torch.Generator().manual_seed(0)
    raw = torch.randn(D_MODEL, D_MODEL, generator=gen)
    raw[:, 0] = 1.0
    q, _ = torch.linalg.qr(raw)
    return q[:, 1:].T.contiguous()


def handmade_model(direct: float = 0.0, prev_heads: tuple[tuple[int, int], ...] = PREV_HEADS) -> ICLTransformer:
    """``prev_heads``: the layer-0 previous-token heads, sharing the copy equally (one head: it carries it all)."""
    model = ICLTransformer(ModelConfig(n_layers=2, d_model=D_MODEL, n_heads=N_HEADS), input_dim=N_CLASSES,
                           n_labels=N_CLASSES, n_outputs=N_CLASSES, init_seed=0)
    b = _basis()
    E, L, P, PREV = b[0:8], b[8:16], b[16:21], b[21:29]
    EX, LAB, SPARE = b[29], b[30], b[31:39]
    one = torch.eye(D_HEAD)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for block in model.blocks:
            block.ln1.w.fill_(1.0)
        model.ln_final.w.fill_(1.0)
        model.embed.W_x.copy_(E)
        model.embed.b_x.copy_(EX)
        model.embed.W_L.copy_(L + LAB)
        model.pos_embed.W_pos[:5] = P
        attn0, attn1 = model.blocks[0].attn, model.blocks[1].attn
        for _, h in prev_heads:
            attn0.W_Q[h] = 2.0 * P.T @ one[:5]  # position t -> f_t
            attn0.W_K[h] = 2.0 * P.T @ one[1:6]  # position s -> f_{s+1}: query t meets key t-1
            attn0.W_V[h] = E.T @ one[:8]  # exemplar class c -> u_c
            # u_c -> PREV[c]; 3 heads x value 4 x 1/12 = unit PREV
            attn0.W_O[h] = (one[:8].T @ PREV) / (4.0 * len(prev_heads))
        _, h = INDUCTION
        attn1.W_Q[h] = 2.5 * (E.T @ one[:8] + 0.5 * EX[:, None] @ one[8:9])
        attn1.W_K[h] = 2.0 * (PREV.T @ one[:8] + LAB[:, None] @ one[8:9])
        attn1.W_V[h] = L.T @ one[:8]
        attn1.W_O[h] = one[:8].T @ L
        model.unembed.W_U.copy_(5.0 * L.T + direct * E.T)
        spare = iter(SPARE)
        for layer, attn in enumerate((attn0, attn1)):
            for head in range(N_HEADS):
                if (layer, head) in prev_heads or (layer, head) == INDUCTION:
                    continue
                attn.W_V[head] = (EX + LAB)[:, None] @ one[:1]
                attn.W_O[head] = 0.3 * one[:1].T @ next(spare)[None]
    return model


def handmade_data(name: str, n: int = 256, seed: int = 0, **spec) -> EvalData:
    """``n`` ctx-2 sequences over the 8 classes (one-hot exemplars), e.g. ``relabel="flip"``."""
    defaults = dict(context_len=2, burstiness=1)
    if spec.get("burstiness") == 0:
        defaults.update(no_support=True, unique_rest=True)
    batch = sample_sequences(SequenceSpec(**{**defaults, **spec}), ClassPool(0, N_CLASSES, 0, 1), n,
                             torch.Generator().manual_seed(seed))
    return EvalData.from_batch(name, batch, torch.eye(N_CLASSES)[:, None, :])
