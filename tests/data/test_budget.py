"""The frame-change budget of the synthetic tracks (fabnet.data.budget)."""

from __future__ import annotations

import pytest

from fabnet.data.budget import CAUSES, l1_budget, main, markdown


def test_budget_separates_the_causes():
    budget = l1_budget(pairs=6, size=16, image_size=32, seed=1, light="camera")
    rows = budget["rows"]
    assert set(rows) == set(CAUSES)
    # With the light fixed to the camera, relighting frame a with frame b's light changes nothing.
    assert rows["light"]["l1"] == 0 and rows["light"]["changed_pixels"] == 0
    for cause in ("all", "pose", "expression", "camera"):
        assert rows[cause]["l1"] > 0, cause
    assert rows["all"]["l1"] > rows["expression"]["l1"]
    assert budget["frames_per_s"] > 0
    table = markdown(budget)
    assert table.count("\n") == len(CAUSES) + 1 and "| light | 0.0000 |" in table


def test_head_light_moves_with_the_pose():
    # The light turns with the head: frame b's light on frame a's pose is another lighting.
    rows = l1_budget(pairs=6, size=16, image_size=32, seed=1, light="head")["rows"]
    assert rows["light"]["l1"] > 0


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="pairs must be an integer >= 2, got 1"):
        l1_budget(pairs=1)
    with pytest.raises(ValueError, match="image_size must be an integer >= 16, got 8"):
        l1_budget(pairs=2, image_size=8)


def test_command_line_refuses_bad_values(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--pairs", "0"])
    assert exit_info.value.code == 2
    assert "--pairs" in capsys.readouterr().err
