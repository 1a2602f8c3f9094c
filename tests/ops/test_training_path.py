"""The CPU training path of warp_blend_l1: only flows and/or logits need gradients.

Then one kernel pass (``fabnet::warp_blend_l1_with_grads``) computes the loss and its per-sample
gradients, and the backward scales them by the upstream gradient in place. These tests check it
against the F.grid_sample reference, that it is the path actually taken, and the cases where
in-place scaling could go wrong (a second backward through a retained graph).
"""

from __future__ import annotations

import pytest
import torch

from fabnet import ops
from fabnet.ops import reference
from tests.ops.inputs import CASES, OPTION_IDS, OPTIONS, Case, make_inputs

pytestmark = pytest.mark.skipif(not ops.extension.available(), reason="fabnet._C not built")

# Which of (flows, logits) need a gradient.
GRAD_SETS = {"flows+logits": (True, True), "flows": (True, False), "logits": (False, True)}


def losses_and_grads(inputs, wants, upstream, *, backend, **options):
    sources, flows, logits, target = inputs
    flows = flows.detach().requires_grad_(wants[0])
    logits = None if logits is None else logits.detach().requires_grad_(wants[1])
    loss = ops.warp_blend_l1(sources, flows, logits, target, backend=backend, **options)
    wanted = [t for t, w in zip((flows, logits), wants) if w and t is not None]
    return loss, torch.autograd.grad((loss * upstream).sum(), wanted)


@pytest.mark.parametrize("case", CASES + [Case(2, 5, 2, 7, 9, 6, 11)], ids=str)  # K = 5: generic loop
@pytest.mark.parametrize("residual,padding_mode,align_corners", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("grad_set", list(GRAD_SETS))
def test_training_path_matches_reference_float64(case, residual, padding_mode, align_corners, grad_set):
    options = dict(residual=residual, padding_mode=padding_mode, align_corners=align_corners)
    inputs = make_inputs(case, residual=residual)
    upstream = torch.randn(case.B, dtype=torch.float64)
    upstream[0] = 0.0  # a sample the curriculum drops
    loss, grads = losses_and_grads(inputs, GRAD_SETS[grad_set], upstream, backend="cpu", **options)
    assert "with_grads" in type(loss.grad_fn).__name__, type(loss.grad_fn).__name__
    ref, ref_grads = losses_and_grads(inputs, GRAD_SETS[grad_set], upstream, backend="reference", **options)
    torch.testing.assert_close(loss, ref, atol=1e-12, rtol=1e-10)
    for g, r in zip(grads, ref_grads):
        assert g.shape == r.shape and g.dtype == r.dtype
        torch.testing.assert_close(g, r, atol=1e-10, rtol=1e-8)


def test_training_path_float32_close_to_float64_truth():
    case = Case(4, 3, 3, 33, 29, 31, 27)
    inputs64 = make_inputs(case, residual=True)
    inputs32 = tuple(t.float() for t in inputs64)
    options = dict(residual=True, padding_mode="border", align_corners=True)
    upstream = torch.rand(case.B, dtype=torch.float64)
    loss, grads = losses_and_grads(inputs32, (True, True), upstream.float(), backend="cpu", **options)
    truth, truth_grads = losses_and_grads(inputs64, (True, True), upstream, backend="reference", **options)
    torch.testing.assert_close(loss.double(), truth, atol=1e-6, rtol=1e-5)
    for g, r in zip(grads, truth_grads):
        # Sign flips of |target - blend| near zero move single pixels' gradients; compare in bulk.
        err = (g.double() - r).abs()
        assert err.max() <= 1e-3 * r.abs().max() or err.gt(1e-5 * r.abs().max()).float().mean() < 1e-3


def test_gradcheck_training_path():
    case = Case(2, 3, 2, 5, 6, 4, 3)
    sources, flows, logits, target = make_inputs(case, residual=True)

    def f(flows, logits):
        return ops.warp_blend_l1(
            sources, flows, logits, target, residual=True, padding_mode="border", align_corners=True, backend="cpu"
        )

    assert torch.autograd.gradcheck(
        f, (flows.requires_grad_(), logits.requires_grad_()), eps=1e-6, atol=1e-5, rtol=1e-4
    )


def test_second_backward_through_retained_graph_recomputes():
    """The first backward scales the stored gradients in place; a second must not reuse them."""
    case = Case(3, 3, 3, 9, 9, 9, 9)
    sources, flows, logits, target = make_inputs(case, residual=True)
    flows.requires_grad_()
    logits.requires_grad_()
    loss = ops.warp_blend_l1(sources, flows, logits, target, residual=True, backend="cpu")
    ref = reference.warp_blend_l1_reference(sources, flows, logits, target, residual=True)
    for upstream in (torch.rand(case.B, dtype=torch.float64), torch.rand(case.B, dtype=torch.float64)):
        got = torch.autograd.grad(loss, [flows, logits], upstream, retain_graph=True)
        want = torch.autograd.grad(ref, [flows, logits], upstream, retain_graph=True)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)


def test_gradients_accumulate_into_grad_over_two_steps():
    case = Case(2, 2, 3, 8, 8, 8, 8)
    sources, flows, logits, target = make_inputs(case, residual=True)
    flows.requires_grad_()
    for _ in range(2):
        ops.warp_blend_l1(sources, flows, logits, target, residual=True, backend="cpu").sum().backward()
    f2 = flows.detach().requires_grad_()
    for _ in range(2):
        reference.warp_blend_l1_reference(sources, f2, logits, target, residual=True).sum().backward()
    torch.testing.assert_close(flows.grad, f2.grad)


@pytest.mark.parametrize("when", ["no_grad", "sources_need_grad", "target_needs_grad", "float16"])
def test_other_cases_keep_the_recompute_backward(when):
    case = Case(2, 2, 3, 8, 8, 8, 8)
    sources, flows, logits, target = make_inputs(
        case, residual=True, dtype=torch.float16 if when == "float16" else torch.float64
    )
    flows.requires_grad_()
    if when == "sources_need_grad":
        sources.requires_grad_()
    if when == "target_needs_grad":
        target.requires_grad_()
    with torch.set_grad_enabled(when != "no_grad"):
        loss = ops.warp_blend_l1(sources, flows, logits, target, residual=True, backend="cpu")
    name = type(loss.grad_fn).__name__ if loss.grad_fn is not None else "none"
    assert "with_grads" not in name


def test_opcheck_with_grads_op():
    case = Case(2, 3, 3, 6, 7, 5, 4)
    sources, flows, logits, target = make_inputs(case, residual=True, dtype=torch.float32)
    for mask in ([True, True], [True, False], [False, True]):
        flows.requires_grad_(mask[0])
        logits.requires_grad_(mask[1])
        torch.library.opcheck(
            torch.ops.fabnet.warp_blend_l1_with_grads.default,
            (sources, flows, logits, target, True, "border", True, mask),
        )


@pytest.mark.parametrize("logits", ["5d", "none"])
@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "permuted"])
def test_training_path_layouts(logits, contiguous):
    case = Case(2, 3, 3, 9, 13, 7, 11)
    options = dict(residual=True, padding_mode="border", align_corners=True)
    inputs = make_inputs(case, residual=True, logits=logits, contiguous=contiguous)
    wants = (True, logits != "none")
    upstream = torch.randn(case.B, dtype=torch.float64)
    loss, grads = losses_and_grads(inputs, wants, upstream, backend="cpu", **options)
    assert "with_grads" in type(loss.grad_fn).__name__
    ref, ref_grads = losses_and_grads(inputs, wants, upstream, backend="reference", **options)
    torch.testing.assert_close(loss, ref, atol=1e-12, rtol=1e-10)
    for g, r in zip(grads, ref_grads):
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, atol=1e-10, rtol=1e-8)


def test_training_path_empty_batch_and_many_threads():
    case = Case(0, 2, 3, 5, 5, 5, 5)
    sources, flows, logits, target = make_inputs(case, residual=True)
    flows.requires_grad_()
    loss = ops.warp_blend_l1(sources, flows, logits, target, residual=True, backend="cpu")
    assert loss.shape == (0,)
    (g,) = torch.autograd.grad(loss.sum(), [flows])
    assert g.shape == flows.shape
    # More threads than rows per sample: the per-row partial sums keep the loss independent of them.
    case = Case(3, 2, 3, 6, 6, 5, 7)
    inputs = make_inputs(case, residual=True)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 7):
            torch.set_num_threads(threads)
            results.append(
                losses_and_grads(
                    inputs, (True, True), torch.ones(case.B, dtype=torch.float64), backend="cpu", residual=True
                )
            )
    finally:
        torch.set_num_threads(before)
    for loss, grads in results[1:]:
        assert torch.equal(loss, results[0][0])
        for g, g0 in zip(grads, results[0][1]):
            assert torch.equal(g, g0)
