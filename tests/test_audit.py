"""Bias audit: per-group accuracy against hand counts, Wilson intervals against published values."""

from __future__ import annotations

import pandas as pd
import pytest

from artlab.experiments import audit, wilson_interval
from artlab.experiments.audit import group_accuracy


@pytest.mark.parametrize("correct, total, expected", [
    (8, 10, (0.4902, 0.9433)),   # Wilson 95% intervals as tabulated by Newcombe (1998)
    (0, 10, (0.0, 0.2775)),
    (10, 10, (0.7225, 1.0)),
    (81, 263, (0.2553, 0.3662)),
])
def test_wilson_interval_known_values(correct, total, expected):
    assert wilson_interval(correct, total) == pytest.approx(expected, abs=5e-4)


def test_group_accuracy_by_hand():
    groups = pd.Series(["a"] * 12 + ["b"] * 20 + ["c"] * 3 + [None])
    correct = pd.Series([True] * 9 + [False] * 3 + [True] * 10 + [False] * 10 + [True, True, False] + [True])
    table = group_accuracy(groups, correct, min_size=5).set_index("group")
    assert table.loc["a", ["images", "correct"]].tolist() == [12, 9] and table.loc["a", "accuracy"] == 0.75
    assert table.loc["b", "accuracy"] == 0.5 and not table.loc["b", "small"]
    assert table.loc["c", "small"] and table.loc["(none)", "images"] == 1  # flagged, not hidden
    assert list(table.index[:2]) == ["a", "b"]  # counted groups first, best first


@pytest.fixture(scope="module")
def probe_run(small_synthetic, tmp_path_factory):
    from artlab.training import TrainConfig, train

    manifest = str(small_synthetic.root / "manifest.csv")
    return train(TrainConfig(name="probe", data=manifest, task="style", strategy="off_the_shelf", image_size=64,
                             device="cpu"), runs_dir=tmp_path_factory.mktemp("runs"))


def test_audit_of_a_run_adds_up_to_its_metrics(probe_run, capsys):
    from artlab.cli import main

    result = audit(probe_run.run.path, by="medium", min_size=5)
    table = result.table
    assert table["images"].sum() == probe_run.metrics["n_images"]
    assert table["correct"].sum() / table["images"].sum() == pytest.approx(probe_run.metrics["accuracy"])
    assert set(table["group"]) <= {"oil", "watercolour", "print"}
    counted = table[~table["small"]]["accuracy"]
    assert result.gap == pytest.approx(counted.max() - counted.min())
    assert all(path.is_file() for path in result.files) and len(result.figure.data[0].x) == len(table)
    artists = audit(probe_run.run.path, by="artist", min_size=50).table
    assert artists["small"].all()  # every artist has a handful of test images: all flagged, all shown
    with pytest.raises(KeyError, match="'medium'"):
        audit(probe_run.run.path, by="colour")
    assert main(["audit", str(probe_run.run.path), "--by", "medium", "--min-size", "5"]) == 0
    assert "gap between the best and the worst group" in capsys.readouterr().out


def test_audit_explorer(probe_run):
    from artlab.widgets import AuditExplorer

    explorer = AuditExplorer(probe_run.run.path, min_size=5)
    assert explorer.columns == ["style", "artist", "medium"] and explorer.by == "style"
    explorer.widget()
    controls = {c.description: c for c in explorer.widget().children[0].children}
    controls["group by"].value = "medium"
    assert explorer.by == "medium" and explorer.computed["audit"] == 2
    controls["group by"].value = "style"
    assert explorer.computed["audit"] == 2, "an audit already made is reused"
    controls["min. images"].value = 3
    assert explorer.computed["audit"] == 3 and explorer.computed["predictions"] == 1, "one forward pass per explorer"
    alone = audit(probe_run.run.path, by="style", min_size=3).table  # computing its own predictions
    pd.testing.assert_frame_equal(explorer.result().table, alone)
    controls["min. images"].value = 5
    figure, facts, table = explorer.view()
    assert facts.loc["groups", "value"] == len(table) == 8 and list(figure.data[0].x) == table["group"].tolist()
