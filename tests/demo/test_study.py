"""``fabnet study``: the seed-mean statistics against direct computations, the claims' rules,
and a quick study end to end (report.json's documented keys, figures that open)."""

import json
import math
import os

import numpy as np
import pytest

from fabnet.cli import main
from fabnet.demo.study_report import compare, gap_share, seed_mean
from fabnet.probe.pipeline import ProbeOutcome


def _outcome(pred, y, ids):
    return ProbeOutcome("pose", np.asarray(pred, float), np.asarray(y, float), np.asarray(ids), {}, None, 0, 0)


def test_seed_mean_is_the_mean_of_the_seeds_and_its_interval_covers_it():
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(40), 3)
    y = rng.normal(0, 10, (120, 3))
    outs = [_outcome(y + rng.normal(0, s, y.shape), y, ids) for s in (1.0, 2.0, 3.0)]
    m = seed_mean(outs, "pose", resamples=300)
    per_seed = [float(np.abs(o.pred - y).mean()) for o in outs]
    assert m["mae_deg"] == pytest.approx(np.mean(per_seed))
    assert m["per_seed"]["mae_deg"] == pytest.approx(per_seed)
    assert m["seed_sd"]["mae_deg"] == pytest.approx(np.std(per_seed, ddof=1))
    lo, hi = m["ci95"]["mae_deg"]
    assert lo < m["mae_deg"] < hi and hi - lo < 0.5 * m["mae_deg"]
    assert m["test_identities"] == 40


def test_seed_mean_refuses_outcomes_on_different_frames():
    y = np.zeros((4, 3))
    with pytest.raises(ValueError, match="same test frames"):
        seed_mean([_outcome(y, y, [0, 0, 1, 1]), _outcome(y, y, [0, 1, 1, 1])], "pose", resamples=10)


def _row(value, lo, hi, sd, metric="mae_deg"):
    return {metric: value, "ci95": {metric: [lo, hi]}, "seed_sd": {metric: sd}}


def test_compare_needs_apart_intervals_and_reads_the_metric_direction():
    c = compare("pose", _row(5.0, 4.5, 5.5, 0.1), _row(7.0, 6.5, 7.5, 0.2))
    assert c["verdict"] == "ahead of" and c["gap"] == pytest.approx(2.0) and c["beyond_two_sd"]
    assert compare("pose", _row(5.0, 4.5, 6.6, 0.1), _row(7.0, 6.5, 7.5, 0.2))["verdict"] == "level with"
    assert not compare("pose", _row(5.0, 4.5, 5.5, 1.5), _row(7.0, 6.5, 7.5, 0.2))["beyond_two_sd"]
    auc = compare("expression", _row(0.6, 0.58, 0.62, 0.01, "auc_mean"), _row(0.7, 0.68, 0.72, 0.01, "auc_mean"))
    assert auc["verdict"] == "behind" and auc["gap"] == pytest.approx(-0.1)


def test_gap_share_runs_from_floor_to_ceiling():
    probes = {"pose": {"noise": {"mae_deg": 14.0}, "supervised": {"mae_deg": 4.0}, "m": {"mae_deg": 9.0}}}
    assert gap_share("pose", probes, "m") == pytest.approx(0.5)
    assert gap_share("pose", probes, "noise") == 0.0 and gap_share("pose", probes, "supervised") == 1.0
    assert gap_share("landmarks", probes, "m") is None


@pytest.mark.slow
def test_quick_study_end_to_end(tmp_path):
    from PIL import Image

    from fabnet.demo.study import STUDY_METHODS

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["study", "--quick", "--out", "s", "--no-progress"]) == 0
    finally:
        os.chdir(cwd)
    out = tmp_path / "s"
    report = json.loads((out / "report.json").read_text())
    assert report["seeds"]["training"] == [0, 1]
    assert report["sizes"]["test_identities"] == 12
    for task, metric in (("landmarks", "nme_iod_pct"), ("pose", "mae_deg"), ("expression", "auc_mean")):
        assert set(report["probes"][task]) == set(STUDY_METHODS)
        for m, r in report["probes"][task].items():
            lo, hi = r["ci95"][metric]
            assert math.isfinite(r[metric]) and lo <= hi and len(r["per_seed"][metric]) == 2, (task, m)
            assert r["seed_sd"][metric] >= 0
    assert {c["claim"] for c in report["claims"]} >= {
        "FAb-Net expression AUC >= 0.65",
        "the learned warp at least 30 % below the no-warp L1",
    }
    assert all(isinstance(c["holds"], bool) for c in report["claims"])
    text = (out / "report.md").read_text()
    assert "smoke test" in text.splitlines()[0]
    for rel in report["figures"].values():
        assert f"]({rel})" in text
        with Image.open(out / rel) as im:
            assert im.size[0] > 100
    # Run again: every training run and baseline is reused, nothing retrained.
    before = {p: os.path.getmtime(p) for p in out.rglob("*.pt")}
    os.chdir(tmp_path)
    try:
        assert main(["study", "--quick", "--out", "s", "--no-progress"]) == 0
    finally:
        os.chdir(cwd)
    assert {p: os.path.getmtime(p) for p in out.rglob("*.pt")} == before


def test_study_refuses_a_single_seed(tmp_path, capsys):
    assert main(["study", "--quick", "--seeds", "3", "--out", str(tmp_path / "s")]) == 2
    assert "seeds must name at least 2 training seeds" in capsys.readouterr().err
