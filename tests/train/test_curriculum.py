"""Curriculum window arithmetic, selection and plateau shifting."""

import math

import pytest
import torch

from fabnet.train.curriculum import Curriculum


@pytest.mark.parametrize(
    "B,expected",
    [
        (32, [(0, 16), (3, 19), (6, 22), (9, 25), (12, 28)]),
        (8, [(0, 4), (0, 4), (1, 5), (2, 6), (3, 7)]),
        (10, [(0, 5), (1, 6), (2, 7), (3, 8), (4, 9)]),
    ],
)
def test_bounds_per_window(B, expected):
    c = Curriculum(patience=1)
    c.observe(1.0)  # the first round sets the best; every later equal loss is a plateau -> shift
    got = []
    for _ in expected:
        got.append(c.bounds(B))
        c.observe(1.0)
    assert got == expected
    lo, hi = expected[-1]
    assert (lo, hi) == (int(0.4 * B + 1e-9), int(0.9 * B + 1e-9))


def test_select_is_mean_of_sorted_window():
    losses = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0], requires_grad=True)
    c = Curriculum()
    out = c.select(losses)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4]).mean())
    out.backward()
    # gradient only reaches the 5 easiest samples, 1/5 each
    expected = torch.where(losses.detach() < 0.45, 0.2, 0.0)
    torch.testing.assert_close(losses.grad, expected)
    plain = Curriculum(enabled=False)
    assert plain.window == (0.0, 1.0) and plain.finished
    torch.testing.assert_close(plain.select(losses.detach()), losses.detach().mean())


def test_tiny_batches_never_empty():
    c = Curriculum()
    assert c.bounds(1) == (0, 1)
    assert c.bounds(2) == (0, 1)
    c.lo10, c.hi10 = 4, 9
    assert c.bounds(2) == (0, 1)
    assert c.bounds(3) == (1, 2)


def test_shifts_on_plateau_and_stops_at_40_90():
    c = Curriculum(patience=2)
    r = c.observe(1.0, step=10)
    assert r["improved"] and not r["shifted"] and c.window == (0.0, 0.5)
    assert c.observe(0.9, step=20)["improved"]
    r = c.observe(0.95, step=30)
    assert not r["improved"] and r["bad_rounds"] == 1 and not r["shifted"]
    r = c.observe(0.95, step=40)
    assert r["plateau"] and r["shifted"] and r["window"] == [0.1, 0.6] and r["bad_rounds"] == 0
    assert c.shifts == [{"step": 40, "from": [0.0, 0.5], "to": [0.1, 0.6]}]
    assert c.best == 0.9  # validation is whole-batch: the best stays comparable across shifts
    # an improvement resets the counter
    c.observe(0.99, step=50)
    assert c.observe(0.8, step=60)["bad_rounds"] == 0
    step = 60
    while not c.finished:
        step += 10
        c.observe(0.85, step)
    assert c.window == (0.4, 0.9) and len(c.shifts) == 4
    for _ in range(6):  # after the last position the window never moves again
        r = c.observe(0.85, step)
        assert not r["shifted"]
    assert c.window == (0.4, 0.9) and r["plateau"]
    assert c.shifts[-1]["to"] == [0.4, 0.9]


def test_state_roundtrip():
    c = Curriculum(patience=1)
    c.observe(1.0, 1)
    c.observe(1.0, 2)
    c.observe(2.0, 3)
    d = Curriculum(patience=1)
    d.load_state_dict(c.state_dict())
    assert d.state_dict() == c.state_dict()
    assert d.window == (0.2, 0.7) and not math.isinf(d.best)
    with pytest.raises(ValueError, match="patience"):
        Curriculum(patience=0)
