"""``torch.vmap`` rules for the fused ops: the mapped dimension folds into the batch B.

Every tensor argument of every fabnet op (forward and backward, C++ and Triton) has the batch B
as its first dimension and computes each sample on its own, so ``vmap`` over N calls of batch B
is one call of batch N * B: each batched argument moves its mapped dimension to the front and
merges it with B; an unbatched one is expanded to N copies first. Outputs split back into
(N, B, ...). Without a rule torch runs the op once per mapped element and says so with a
"performance drop" warning.
"""

from __future__ import annotations

import torch


def _fold(t, dim: int | None, n: int):
    """(N, B, ...) or an unbatched (B, ...) -> (N * B, ...); other values pass through."""
    if not isinstance(t, torch.Tensor):
        return t
    t = t.movedim(dim, 0) if dim is not None else t.unsqueeze(0).expand(n, *t.shape)
    return t.reshape(n * t.shape[1], *t.shape[2:])


def _unfold(out: torch.Tensor, n: int, batch: int):
    """(N * B, ...) -> ((N, B, ...), 0); a 0-element placeholder (an unrequested gradient of a
    backward op) stays as it is, unbatched."""
    if out.dim() == 1 and out.numel() == 0 and batch != 0:
        return out, None
    return out.reshape(n, batch, *out.shape[1:]), 0


def register(op_name: str) -> None:
    """Registers the fold rule for ``op_name`` (``"fabnet::warp_blend"``, ...)."""
    op = getattr(torch.ops.fabnet, op_name.split("::")[1]).default

    def rule(info, in_dims, *args):
        n = info.batch_size
        first = next(i for i, a in enumerate(args) if isinstance(a, torch.Tensor))
        shape = list(args[first].shape)
        if in_dims[first] is not None:
            del shape[in_dims[first]]
        batch = shape[0]
        result = op(*(_fold(a, d, n) for a, d in zip(args, in_dims)))
        if isinstance(result, torch.Tensor):
            return _unfold(result, n, batch)
        outputs, dims = zip(*(_unfold(r, n, batch) for r in result))
        return tuple(outputs), tuple(dims)

    torch.library.register_vmap(op_name, rule)
