"""Training curves: the CSV (the one source) and its dvclive mirror, read back from what dvclive wrote."""

from __future__ import annotations

import csv
import json

from sumrl.artifacts import CurveLogger


def _tsv(path):
    """(step, value) rows of one dvclive metric file."""
    with open(path) as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [(int(r["step"]), float(r[next(k for k in r if k != "step")])) for r in rows]


def test_every_row_reaches_dvclive_at_its_step(tmp_path):
    live = tmp_path / "dvclive" / "rl_rloo_s0"
    logger = CurveLogger(tmp_path / "curve.csv", live_dir=live)
    for step in (1, 2, 3):
        logger.log({"step": step, "loss": 1.0 / step, "value_loss": "", "eos_rate": 0.5})
    assert json.loads((live / "metrics.json").read_text()) == {"step": 3, "loss": 1 / 3, "eos_rate": 0.5}
    assert _tsv(live / "plots" / "metrics" / "loss.tsv") == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    assert not (live / "plots" / "metrics" / "value_loss.tsv").exists()  # an empty column is not a metric


def test_a_resumed_run_rebuilds_the_mirror_from_the_rows_it_keeps(tmp_path):
    live = tmp_path / "dvclive" / "sft"
    first = CurveLogger(tmp_path / "curve.csv", live_dir=live)
    for step in (1, 2, 3, 4):
        first.log({"step": step, "loss": float(step)})
    resumed = CurveLogger(tmp_path / "curve.csv", resume=True, live_dir=live)
    resumed.truncate_after(2)  # the checkpoint was at step 2: steps 3-4 are trained again
    resumed.log({"step": 3, "loss": 30.0})
    assert _tsv(live / "plots" / "metrics" / "loss.tsv") == [(1, 1.0), (2, 2.0), (3, 30.0)]
    assert json.loads((live / "metrics.json").read_text())["step"] == 3
    with open(tmp_path / "curve.csv") as fh:
        assert [r["loss"] for r in csv.DictReader(fh)] == ["1", "2", "30"]
