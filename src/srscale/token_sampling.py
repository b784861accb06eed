"""Choosing the next token of each row: greedy, or temperature + top-p from a per-row random stream.

Semantics are those of transformers' ``generate(do_sample=True, temperature=T, top_p=p, top_k=0)``:
logits are divided by ``T``, then the smallest-probability tokens whose cumulative mass is at most
``1 - p`` are removed (the most probable token always stays), and the next token is drawn from the
renormalised rest. Greedy (``T = 0``) is the argmax, as ``do_sample=False``.

What differs from ``generate`` is where the randomness comes from: each row brings its own uniform
number for this step (drawn ahead from its own ``torch.Generator``, see :func:`row_uniforms`), and the
token is the inverse of the distribution's CDF at that number. So a row's tokens depend only on its
logits and its own stream, never on which other rows share the batch or in which order.
"""

from __future__ import annotations

import torch


def row_uniforms(seed: int, steps: int) -> torch.Tensor:
    """``steps`` uniform numbers in [0, 1) from a generator seeded ``seed``: one per decode step of a
    row (float64, so the inverse CDF resolves probabilities far below float32's 2**-24)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.rand(steps, generator=gen, dtype=torch.float64)


def top_p_keep(scores: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """transformers' top-p rule on ``scores`` [rows, vocab], in ascending order of score.

    Returns ``(sorted_indices, sorted_probs, keep)``: token ids sorted by ascending score, their
    softmax probabilities, and which of them survive (cumulative mass from below > ``1 - top_p``,
    the last, most probable, always kept).
    """
    sorted_scores, sorted_indices = torch.sort(scores, dim=-1, descending=False)
    probs = sorted_scores.softmax(dim=-1)
    keep = probs.cumsum(dim=-1) > (1 - top_p)
    keep[..., -1] = True
    return sorted_indices, probs, keep


def next_tokens(logits: torch.Tensor, temperature: float, top_p: float,
                uniforms: torch.Tensor | None) -> torch.Tensor:
    """The next token of each row of ``logits`` [rows, vocab] (float32 recommended).

    ``temperature == 0``: argmax (``uniforms`` ignored). Otherwise ``uniforms`` [rows] in [0, 1)
    picks each row's token by inverse CDF over the kept tokens.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    if uniforms is None:
        raise ValueError("sampling needs one uniform number per row")
    scores = logits / temperature if temperature != 1.0 else logits
    if top_p < 1.0:
        order, probs, keep = top_p_keep(scores, top_p)
        weights = probs.masked_fill(~keep, 0.0)
    else:
        order, weights = None, scores.softmax(dim=-1)
    cdf = weights.to(torch.float64).cumsum(dim=-1)
    target = (uniforms.to(cdf.device, torch.float64) * cdf[:, -1]).unsqueeze(-1)
    picked = torch.searchsorted(cdf, target, right=True).clamp_(max=cdf.shape[-1] - 1)
    # Removed tokens form a prefix of zero weight (cdf 0, never > target), so the pick is a kept token.
    return (order.gather(-1, picked) if order is not None else picked).squeeze(-1)
