"""The Triton launchers' shape-keyed choices: program size by SM count, int32 or int64 offsets.

launch_config is checked as a function; each choice it can make, and the int64 kernels, are run
under Triton's interpreter against the reference (test_triton_compile.py compiles them all for
sm_80 and sm_90 and checks for spills).
"""

from __future__ import annotations

import pytest

from tests.ops.interpreter import requires_triton, run_interpreted

pytestmark = requires_triton


@pytest.mark.parametrize(
    ("kind", "batch", "pixels", "sms", "expected"),
    [
        ("forward", 32, 256 * 256, 132, (256, 8)),  # 8192 programs: the largest config
        ("forward", 8, 128 * 128, 132, (128, 4)),  # 512 programs of 256 < 4 x 132: halve once
        ("forward", 8, 128 * 128, None, (256, 8)),  # no GPU to size for: the largest
        ("backward", 2, 128 * 128, 132, (64, 2)),  # 256, then 512 programs: down to the smallest
        ("backward", 8, 128 * 128, 132, (128, 4)),
        ("forward", 1, 7, 132, (16, 8)),  # tiny image: _block already shrank it below SMALLEST_BLOCK
    ],
)
def test_launch_config(kind, batch, pixels, sms, expected):
    from fabnet.kernels.warp_blend import launch_config

    assert launch_config(kind, batch, pixels, sms) == expected


_SNIPPET = """
import json, torch
from fabnet.kernels import warp_blend as kw
from fabnet.ops import reference
from tests.ops.inputs import Case, make_inputs
if {force_int64}:
    kw._fits_int32 = lambda *args, **kwargs: False
torch.manual_seed(0)
s, f, lg, t = make_inputs(Case(2, 3, 3, 9, 11, 12, 20), dtype=torch.float64, residual=True)
options = dict(residual=True, border=True, align_corners=False)
blend = kw.forward(s, f, lg, None, **options, sms={sms}, poison=True)
loss = kw.forward(s, f, lg, t, **options, sms={sms}, poison=True)
up = torch.randn(2, 3, 12, 20, dtype=torch.float64)
grads = kw.backward(up, s, f, lg, None, **options, need_sources=True, need_flows=True, need_logits=True,
                    need_target=False, sms={sms}, poison=True)
leaves = [x.clone().requires_grad_() for x in (s, f, lg)]
kw_ref = dict(residual=True, padding_mode="border", align_corners=False)
ref = reference.warp_blend_reference(*leaves, **kw_ref)
want = torch.autograd.grad(ref, leaves, up)
ref_loss = reference.warp_blend_l1_reference(s, f, lg, t, **kw_ref)
errors = [(blend - ref.detach()).abs().max().item(), (loss - ref_loss).abs().max().item()]
errors += [(g - w).abs().max().item() for g, w in zip(grads[:3], want)]
print(json.dumps(errors))
"""


@pytest.mark.parametrize(("sms", "force_int64"), [(132, False), (None, True)], ids=["small-programs", "int64"])
def test_configs_match_the_reference(sms, force_int64):
    """Programs of 64 pixels over 2 warps (what an H100 gets at this size), and 64-bit offsets."""
    errors = run_interpreted(_SNIPPET.format(sms=sms, force_int64=force_int64))
    assert all(e <= 1e-10 for e in errors), errors  # NaN (an unwritten element) fails too
