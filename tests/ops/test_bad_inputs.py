"""Bad input is refused before any kernel runs, with the argument, the expected and the actual."""

from __future__ import annotations

import pytest
import torch

from fabnet import ops
from fabnet.ops import checks


def good(B=2, K=3, C=3, H=5, W=6, dtype=torch.float32):
    return dict(
        sources=torch.rand(B, K, C, 7, 8, dtype=dtype),
        flows=torch.rand(B, K, 2, H, W, dtype=dtype),
        logits=torch.rand(B, K, H, W, dtype=dtype),
        target=torch.rand(B, C, H, W, dtype=dtype),
    )


def call(**overrides):
    args = good()
    args.update(overrides)
    options = {k: args.pop(k) for k in list(args) if k not in ("sources", "flows", "logits", "target")}
    return ops.warp_blend_l1(args["sources"], args["flows"], args["logits"], args["target"], **options)


@pytest.mark.parametrize(
    "overrides,error,words",
    [
        (dict(sources=torch.rand(2, 3, 7, 8)), ValueError, ["sources", "(B, K, C, Hs, Ws)", "(2, 3, 7, 8)"]),
        (dict(flows=torch.rand(2, 3, 3, 5, 6)), ValueError, ["flows", "(B, K, 2, H, W)", "K=3", "(2, 3, 3, 5, 6)"]),
        (dict(flows=torch.rand(2, 2, 2, 5, 6)), ValueError, ["flows", "K=3", "(2, 2, 2, 5, 6)"]),
        (dict(logits=torch.rand(2, 3, 5, 5)), ValueError, ["logits", "(B, K, H, W)", "(2, 3, 5, 5)"]),
        (dict(logits=torch.rand(2, 3, 2, 5, 6)), ValueError, ["logits", "(2, 3, 2, 5, 6)"]),
        (dict(target=torch.rand(2, 1, 5, 6)), ValueError, ["target", "(2, 3, 5, 6)", "(2, 1, 5, 6)"]),
        (dict(padding_mode="reflection"), ValueError, ["padding_mode", "'reflection'"]),
        (dict(residual=1), ValueError, ["residual"]),
        (dict(sources=torch.randint(0, 9, (2, 3, 3, 7, 8))), TypeError, ["sources", "torch.int64"]),
        (
            dict(target=torch.rand(2, 3, 5, 6, dtype=torch.float64)),
            TypeError,
            ["target=torch.float64", "sources=torch.float32"],
        ),
        (dict(flows=torch.rand(2, 3, 2, 5, 6, device="meta")), ValueError, ["flows on meta", "sources on cpu"]),
        (dict(target=None), TypeError, ["target", "None"]),
        (dict(backend="cuda"), ValueError, ["'cuda'", "cannot serve"]),
        (dict(backend="tpu"), ValueError, ["backend", "'tpu'"]),
    ],
)
def test_bad_input_message(overrides, error, words):
    with pytest.raises(error) as info:
        call(**overrides)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"


def test_cpp_op_checks_direct_callers():
    """torch.ops.fabnet.* itself refuses shapes that would read out of bounds."""
    args = good()
    with pytest.raises(RuntimeError, match="target must have shape"):
        torch.ops.fabnet.warp_blend_l1(
            args["sources"], args["flows"], args["logits"], args["target"][:, :1], True, "zeros", True
        )
    with pytest.raises(RuntimeError, match="padding_mode"):
        torch.ops.fabnet.warp_blend(args["sources"], args["flows"], None, True, "mirror", True)


def test_a_call_larger_than_memory_is_refused_before_allocating():
    """Expanded (stride-0) inputs cost nothing; the output they ask for would not fit."""
    sources = torch.zeros(1, 1, 1, 1, 1).expand(2**20, 1, 3, 8, 8)
    flows = torch.zeros(1, 1, 1, 1, 1).expand(2**20, 1, 2, 2**11, 2**11)
    with pytest.raises(
        ValueError,
        match=r"this call needs \d+\.\d GiB for its output, gradients and internal copies, more than "
        r"the \d+\.\d GiB of physical memory; split the batch",
    ):
        ops.warp_blend(sources, flows)


def test_internal_copies_of_expanded_inputs_are_counted():
    """A tiny output (the loss, (B,)) over expanded flows and target: the CPU kernel reads them
    contiguous, more than the machine holds. Before, the check counted the loss alone (16 KB at
    B = 4096) and the allocator was asked for 32 GiB; now the call is refused first."""
    K, H, W = 4, 512, 512
    limit, _ = checks._memory_limit(torch.device("cpu"))
    B = limit // (K * 2 * H * W * 4) + 1  # the flows' copy alone passes this machine's memory
    sources = torch.rand(1, 1, 1, 2, 2).expand(B, K, 1, 2, 2)
    flows = torch.zeros(1, 1, 2, 1, 1).expand(B, K, 2, H, W)
    target = torch.zeros(1, 1, 1, 1).expand(B, 1, H, W)
    need = (B + flows.numel() + target.numel()) * 4 / 2**30  # the loss (B,) and the two copies
    with pytest.raises(ValueError, match=rf"needs {need:.1f} GiB for its output, gradients and internal copies"):
        ops.warp_blend_l1(sources, flows, None, target, backend="cpu")
    # Made contiguous at a size that fits, the same call has no copies to count.
    small = dict(sources=sources[:2].contiguous(), flows=flows[:2, :, :, :8, :8].contiguous())
    assert checks._internal_copies(*small.values(), None, target[:2, :, :8, :8].contiguous(), 4) == 0


def test_a_plane_past_32_bit_offsets_is_refused():
    # Meta tensors: the layout without the 8 GB of storage it would take.
    sources = torch.empty_strided((1, 1, 1, 2, 2), (0, 0, 0, 2**31, 1), device="meta")
    flows = torch.empty(1, 1, 2, 2, 2, device="meta")
    with pytest.raises(ValueError, match=r"one \(Hs, Ws\) = \(2, 2\) plane spans 2147483650 elements"):
        ops.warp_blend(sources, flows)
