"""Factor sweeps: one run per cell named from its factors, reused on rerun, failures recorded and retried."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from artlab.experiments import Sweep, sweep
from artlab.experiments.sweep import Cell, cells_table, check_grid, summarise, sweep_figure
from artlab.runs import Run
from artlab.training import TrainConfig

execution = importlib.import_module("artlab.experiments.sweep.execution")  # where the cells train


@pytest.fixture(scope="module")
def manifest(small_synthetic) -> str:
    return str(small_synthetic.root / "manifest.csv")


def probe(manifest: str, **options) -> TrainConfig:
    """An off-the-shelf linear probe on the small synthetic collection: under a second, features cached."""
    return TrainConfig(**{"data": manifest, "task": "style", "strategy": "off_the_shelf", "classifier": "linear",
                          "epochs": 1, "image_size": 64, "device": "cpu", **options})


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and "sweeps" not in p.parts}


def test_grid_mistakes_are_one_line_errors(manifest):
    with pytest.raises(ValueError, match=r"unknown factor 'learning_rate'.*'freeze'.*'lr'.*source_classes"):
        check_grid({"learning_rate": [0.1]})
    with pytest.raises(ValueError, match="'seed' cannot be a factor"):
        check_grid({"seed": [0, 1]})
    with pytest.raises(ValueError, match=r"grid\['freeze'\] must be a non-empty list"):
        check_grid({"freeze": []})
    with pytest.raises(ValueError, match=r"grid\['freeze'\] must be a non-empty list"):
        check_grid({"freeze": 5})
    with pytest.raises(ValueError, match="source_classes.*needs source="):
        sweep(probe(manifest), {"source_classes": [2, 4]})
    with pytest.raises(ValueError, match="'init_from' cannot be combined with source="):
        sweep(probe(manifest), {"init_from": ["a", "b"]}, source=probe(manifest))
    with pytest.raises(ValueError, match=r"grid cell lr-1: lr must be a finite number"):
        sweep(probe(manifest), {"lr": [-1]})
    with pytest.raises(ValueError, match=r"base: unknown config keys \['epoch'\]"):
        sweep({"data": manifest, "epoch": 3}, {"lr": [0.1]})
    assert check_grid({"lr": ["1e-3", 0.01]}) == {"lr": [0.001, 0.01]}  # YAML reads 1e-3 as a string


def test_a_sweep_trains_each_cell_once_and_summarises(manifest, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    grid = {"layer": ["features.14", "features.18"], "lr": [0.1, 0.01]}
    result = sweep(probe(manifest), grid, seeds=(0, 1), workers=1, runs_dir=runs, name="probes")
    cells = result.cells
    expected = {f"probes-layer{layer}-lr{lr}-seed{seed}" for layer in grid["layer"] for lr in grid["lr"]
                for seed in (0, 1)}
    assert set(cells["run"]) == expected and len(cells) == 8 and (cells["status"] == "finished").all()
    for row in cells.itertuples(index=False):  # each run was trained with its cell's values
        config = Run(runs / row.run).config()
        assert (config["layer"], config["lr"], config["seed"]) == (row.layer, row.lr, row.seed)
        assert Run(runs / row.run).metrics()["accuracy"] == row.accuracy
    # mean and sample sd over seeds, by hand
    by_hand = cells.groupby(["layer", "lr"], sort=False)["accuracy"].agg(["mean", "std", "size"])
    table = result.table.set_index(["layer", "lr"])
    assert table["accuracy mean"].to_numpy() == pytest.approx(by_hand["mean"].to_numpy())
    assert table["accuracy sd"].to_numpy() == pytest.approx(by_hand["std"].to_numpy(), nan_ok=True)
    assert (table["seeds"] == 2).all() and (table["failed"] == 0).all()
    # two factors: a heatmap of the means; files beside the runs
    assert result.figure.data[0].type == "heatmap"
    assert np.nansum(result.figure.data[0].z) == pytest.approx(result.table["accuracy mean"].sum())
    folder = runs / "sweeps" / "probes"
    assert [p.name for p in result.files] == ["cells.csv", "summary.csv", "sweep.yaml", "sweep.html"]
    assert all(p.is_file() for p in result.files) and (folder / "plotly.min.js").is_file()
    assert pd.read_csv(folder / "cells.csv")["run"].tolist() == cells["run"].tolist()
    assert result.best_run() == runs / cells.loc[cells["accuracy"].idxmax(), "run"]
    # rerun: nothing trains, no run file is touched, the same table comes back
    before = mtimes(runs)
    monkeypatch.setattr(execution, "train", lambda *a, **k: pytest.fail("a finished cell was trained again"))
    again = sweep(probe(manifest), grid, seeds=(0, 1), workers=1, runs_dir=runs, name="probes")
    assert mtimes(runs) == before
    pd.testing.assert_frame_equal(again.table, result.table)


def test_finished_cells_reused_on_a_changed_collection_are_named(manifest, tmp_path):
    table = pd.read_csv(manifest)
    table["path"] = [str((Path(manifest).parent / p).resolve()) for p in table["path"]]
    copy = tmp_path / "manifest.csv"
    table.to_csv(copy, index=False)
    runs, grid = tmp_path / "runs", {"lr": [0.1, 0.01]}
    first = sweep(probe(str(copy)), grid, workers=1, runs_dir=runs, name="changing")
    table.loc[0, "style"] = table["style"][table["style"] != table.loc[0, "style"]].iloc[0]  # one image relabelled
    table.to_csv(copy, index=False)
    with pytest.warns(UserWarning, match=r"2 finished cell\(s\) of the sweep are reused as trained.*"
                                         r"1 image\(s\) relabelled"):
        again = sweep(probe(str(copy)), grid, workers=1, runs_dir=runs, name="changing")
    pd.testing.assert_frame_equal(again.table, first.table)  # the rows of the collection as it was, said so


def test_a_failed_cell_is_recorded_and_retried(manifest, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    real_train = execution.train
    calls = []

    def flaky(config, runs_dir, resume):
        calls.append(config.name)
        if config.layer == "features.18" and calls.count(config.name) == 1:
            raise RuntimeError("disk on fire\nsecond line")
        return real_train(config, runs_dir, resume)

    monkeypatch.setattr(execution, "train", flaky)
    grid = {"layer": ["features.14", "features.18"]}
    first = sweep(probe(manifest), grid, workers=1, runs_dir=runs, name="flaky")
    failed = first.cells.set_index("layer").loc["features.18"]
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: disk on fire"
    row = first.table.set_index("layer").loc["features.18"]
    assert row["failed"] == 1 and row["seeds"] == 0 and np.isnan(row["accuracy mean"])
    kept = mtimes(runs)
    second = sweep(probe(manifest), grid, workers=1, runs_dir=runs, name="flaky")
    assert (second.cells["status"] == "finished").all()
    assert calls == ["flaky-layerfeatures.14-seed0", "flaky-layerfeatures.18-seed0", "flaky-layerfeatures.18-seed0"]
    assert all(mtimes(runs)[path] == time for path, time in kept.items())  # the finished cell was left alone
    # a cell whose options cannot work fails before anything is written, with the reason
    base = TrainConfig(data=manifest, task="style", epochs=1, image_size=64, device="cpu")
    bad = sweep(base, {"freeze": [99]}, workers=1, runs_dir=runs, name="too-deep")
    assert bad.cells["status"].tolist() == ["failed"]
    assert "freeze must be at most 19" in bad.cells["error"].item()
    assert not (runs / "too-deep-freeze99-seed0").exists()
    # a cell whose source stage failed is failed with the source's reason, without being started
    source = TrainConfig(data=manifest, task="style", freeze=99, epochs=1, image_size=64, device="cpu")
    orphan = sweep(probe(manifest), {"source_classes": [2]}, workers=1, runs_dir=runs, source=source, name="orphan")
    assert orphan.cells["status"].tolist() == ["failed"]  # its source is its own collection: "-apart" (leak guard)
    assert orphan.cells["source run"].item() == "orphan-apart-source-top2-seed0"
    assert orphan.cells["error"].item().startswith(
        "source run orphan-apart-source-top2-seed0 failed: ValueError: freeze")


@pytest.mark.slow
def test_source_classes_trains_one_source_run_per_n(manifest, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    source = TrainConfig(data=manifest, task="style", strategy="fine_tune", epochs=1, image_size=64, device="cpu",
                         batch_size=16)
    base = probe(manifest, task="medium")
    result = sweep(base, {"source_classes": [2, 4], "layer": ["features.14", "features.18"]}, workers=1,
                   runs_dir=runs, source=source, name="transfer")
    cells = result.cells
    assert (cells["status"] == "finished").all() and len(cells) == 4
    assert sorted(set(cells["source run"])) == ["transfer-apart-source-top2-seed0", "transfer-apart-source-top4-seed0"]
    for n in (2, 4):
        stage = Run(runs / f"transfer-apart-source-top{n}-seed0")
        assert stage.config()["top_n"] == n and stage.config()["task"] == "style"
        assert pd.read_csv(stage.file("split.csv"))["style"].nunique() == n
        for name in cells[cells["source_classes"] == n]["run"]:
            assert Run(runs / name).config()["init_from"] == str(stage.path)
    trained = []
    monkeypatch.setattr(execution, "train", lambda config, *a, **k: trained.append(config.name))
    sweep(base, {"source_classes": [2, 4], "layer": ["features.14", "features.18"]}, workers=1, runs_dir=runs,
          source=source, name="transfer")
    assert trained == []


@pytest.mark.slow
def test_two_workers_give_the_table_of_one(manifest, tmp_path, monkeypatch):
    grid = {"layer": ["features.14", "features.18"]}
    one = sweep(probe(manifest), grid, seeds=(0, 1), workers=1, runs_dir=tmp_path / "one", name="w")
    monkeypatch.setenv("ARTLAB_CACHE", str(tmp_path / "cache"))  # the workers compute the features afresh
    two = sweep(probe(manifest), grid, seeds=(0, 1), workers=2, runs_dir=tmp_path / "two", name="w")
    assert (two.cells["status"] == "finished").all()
    pd.testing.assert_frame_equal(one.cells, two.cells)
    pd.testing.assert_frame_equal(one.table, two.table)


def test_sweep_from_the_command_line(manifest, tmp_path, capsys):
    from artlab.cli import main

    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"base: {{data: {manifest}, task: style, strategy: off_the_shelf, classifier: linear, epochs: 1, "
                    f"image_size: 64, device: cpu}}\n"
                    f"grid: {{layer: [features.14]}}\nseeds: [0]\nworkers: 1\nname: cli\n")
    assert main(["sweep", str(spec), "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "features.14" in out and "accuracy mean" in out
    assert (tmp_path / "runs" / "cli-layerfeatures.14-seed0").is_dir()
    spec.write_text("base: {data: synthetic}\ngrid: {lr: [0.1]}\nseed: [0]\n")
    assert main(["sweep", str(spec)]) == 2
    assert "unknown keys ['seed']" in capsys.readouterr().err


def handmade() -> pd.DataFrame:
    """Cells of a 2 x 2 x 2 grid over two seeds with known accuracies (one cell failed)."""
    rows = []
    for i, (freeze, lr, size, seed) in enumerate(np.ndindex(2, 2, 2, 2)):
        rows.append({"freeze": [0, 10][freeze], "lr": [0.1, 0.001][lr], "image_size": [64, 128][size], "seed": seed,
                     "status": "finished", "accuracy": i / 16, "run": f"r{i}"})
    rows[-1] |= {"status": "failed", "accuracy": np.nan}
    return pd.DataFrame(rows)


def test_summary_and_charts_by_hand():
    cells = handmade()
    table = summarise(cells, ["freeze", "lr", "image_size"])
    assert len(table) == 8 and table["accuracy mean"].iloc[0] == pytest.approx(0.5 / 16)
    assert table["accuracy sd"].iloc[0] == pytest.approx(np.std([0, 1 / 16], ddof=1))
    assert table.iloc[-1][["seeds", "failed"]].tolist() == [1, 1] and table["accuracy mean"].iloc[-1] == 14 / 16
    lines = sweep_figure(table, ["freeze", "lr", "image_size"], x="lr")
    assert len(lines.data) == 4 and lines.layout.xaxis.type == "log"  # one line per (freeze, image_size)
    assert list(lines.data[0].x) == [0.001, 0.1]  # numbers ascending
    assert list(lines.data[0].y) == pytest.approx([table["accuracy mean"].iloc[2], table["accuracy mean"].iloc[0]])
    heat = sweep_figure(table, ["freeze", "lr", "image_size"], x="freeze", y="lr")
    assert heat.data[0].type == "heatmap" and "averaged over image_size" in heat.layout.title.text
    assert list(heat.data[0].y) == ["0.001", "0.1"] and list(heat.data[0].x) == ["0", "10"]
    expected = cells[(cells["freeze"] == 0) & (cells["lr"] == 0.001)]["accuracy"].mean()  # both sizes, both seeds
    assert heat.data[0].z[0][0] == pytest.approx(expected)
    with pytest.raises(KeyError, match="no factor 'epochs'"):
        sweep_figure(table, ["freeze", "lr", "image_size"], x="epochs")


def test_sweep_explorer_draws_each_view_once(tmp_path):
    from artlab.widgets import SweepExplorer

    cells = handmade()
    factors = ["freeze", "lr", "image_size"]
    table = summarise(cells, factors)
    result = Sweep(name="hand", factors=factors, cells=cells, summary=table, figure=sweep_figure(table, factors),
                   report=tmp_path / "sweep.html", metric="accuracy")
    explorer = SweepExplorer(result)
    assert explorer.y is None and explorer.view()[0].data[0].type == "scatter"
    explorer.select(x="lr", y="freeze")
    assert explorer.view()[0].data[0].type == "heatmap"
    explorer.select(y="lr")  # the x factor itself: back to lines
    assert explorer.y is None and explorer.view()[0].data[0].type == "scatter"
    explorer.select(x="lr", y="freeze")  # drawn before: reused
    explorer.view()
    assert explorer.computed["chart"] == 3
    with pytest.raises(KeyError, match="no metric 'mAP'"):
        explorer.select(metric="mAP")


def test_a_null_factor_value_stays_null_and_reads_all(tmp_path):
    cells = [Cell({"source_classes": n}, seed, TrainConfig(name=f"r{n}-{seed}"), f"s{n}-{seed}")
             for n in (None, 4) for seed in (0, 1)]
    outcomes = {c.config.name: {"status": "finished", "accuracy": 0.5 + 0.1 * (c.factors["source_classes"] == 4)}
                for c in cells}
    table = cells_table(cells, outcomes, ["source_classes"])
    assert table["source_classes"].tolist() == [None, None, 4, 4]  # not NaN and 4.0
    summary = summarise(table, ["source_classes"])
    assert summary["source_classes"].tolist() == [None, 4] and summary["seeds"].tolist() == [2, 2]
    figure = sweep_figure(summary, ["source_classes"])
    assert list(figure.data[0].x) == ["all", "4"]


def test_multi_task_cells_report_their_mean_score(tmp_path):
    metrics = {"tasks": {"style": {"accuracy": 0.4, "n_images": 9}, "artist": {"accuracy": 0.6, "n_images": 9}},
               "mean_score": 0.5, "split": "test"}
    outcome = execution._outcome(metrics)
    assert outcome["status"] == "finished" and outcome["mean_score"] == 0.5
    cell = Cell({"lr": 0.1}, 0, TrainConfig(name="multi"))
    table = cells_table([cell], {"multi": outcome}, ["lr"])
    summary = summarise(table, ["lr"])
    result = Sweep(name="multi", factors=["lr"], cells=table, summary=summary,
                   figure=sweep_figure(summary, ["lr"], "mean_score"), report=tmp_path / "sweep.html",
                   runs_dir=tmp_path.parent.parent, metric="mean_score")
    assert result.metrics == ["mean_score"] and summary["mean_score mean"].tolist() == [0.5]
    assert result.best_run() == tmp_path.parent.parent / "multi"
