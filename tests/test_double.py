"""Double fine-tuning as one study: every route on the same target split, reused on rerun, differences by hand."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from artlab.experiments import ROUTES, double_finetune
from artlab.training import TrainConfig


@pytest.mark.slow
def test_a_double_fine_tuning_study(small_synthetic, tmp_path, monkeypatch, capsys):
    import artlab.experiments.double as double
    from artlab.cli import main
    from artlab.runs import Run

    manifest = str(small_synthetic.root / "manifest.csv")
    source = TrainConfig(data=manifest, task="style", epochs=1, backbone_lr_mult=1.0)
    target = {"data": manifest, "task": "medium", "epochs": 1, "batch_size": 16}  # a YAML-like mapping
    study = double_finetune(source, target, seeds=(0, 1), image_size=32, device="cpu", runs_dir=tmp_path / "runs")
    cells = study.cells
    assert sorted(set(cells["route"])) == sorted([*ROUTES, "source stage"]) and len(cells) == 12
    # every target route of a seed used the same split
    for seed in (0, 1):
        names = cells[(cells["seed"] == seed) & (cells["route"] != "source stage")]["run"]
        splits = {pd.read_csv(Run(tmp_path / "runs" / n).file("split.csv"))[["path", "split"]].to_csv() for n in names}
        assert len(splits) == 1, seed
    # the double route starts from that seed's source stage
    double_run = Run(tmp_path / "runs" / cells[(cells["route"] == ROUTES[3]) & (cells["seed"] == 1)]["run"].item())
    assert double_run.config()["init_from"].endswith("source-seed1")
    # the summary and the paired difference against the cells, by hand
    single = cells[cells["route"] == ROUTES[2]].set_index("seed")["accuracy"]
    doubled = cells[cells["route"] == ROUTES[3]].set_index("seed")["accuracy"]
    assert study.difference["double - single"].tolist() == pytest.approx((doubled - single).tolist())
    row = study.summary.set_index("route").loc[ROUTES[4]]
    scratch = cells[cells["route"] == ROUTES[4]]["accuracy"]
    assert row["accuracy mean"] == pytest.approx(scratch.mean()) and row["accuracy sd"] == pytest.approx(scratch.std())
    assert study.report.is_file() and len(study.figure.data[0].x) == len(study.summary)
    # rerun: every cell is reused, nothing trains
    real_train = double.train

    def reuse_only(config, runs_dir, resume):
        assert Run(Path(runs_dir) / config.name).finished, f"{config.name} was trained again"
        return real_train(config, runs_dir, resume)

    monkeypatch.setattr(double, "train", reuse_only)
    again = double_finetune(source, target, seeds=(0, 1), image_size=32, device="cpu", runs_dir=tmp_path / "runs")
    assert again.cells.equals(cells)
    yaml = tmp_path / "study.yaml"
    yaml.write_text(f"source: {{data: {manifest}, task: style, epochs: 1, backbone_lr_mult: 1.0}}\n"
                    f"target: {{data: {manifest}, task: medium, epochs: 1, batch_size: 16}}\nseeds: [0]\n"
                    f"image_size: 32\n")
    assert main(["study", "double", str(yaml), "--device", "cpu", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "double - single" in capsys.readouterr().out
    # what each stage changed: the filter changes of "source -> target" are those between the two saved networks
    from safetensors.torch import load_file

    from artlab.experiments import STAGE_CHANGES, stage_changes

    changes = stage_changes(again, seed=0, what=("params", "cka"), max_images=30)
    assert list(changes) == [name for name, _, _ in STAGE_CHANGES]
    before = load_file(study.run("source stage", 0) / "model.safetensors")["features.0.0.weight"].double().flatten(1)
    after = load_file(study.run(ROUTES[3], 0) / "model.safetensors")["features.0.0.weight"].double().flatten(1)
    expected = ((after - before).abs().mean(1) / before.abs().mean(1)).numpy()
    filters = changes["source -> target (double)"].tables["params_filters"]
    assert filters[filters["layer"] == "features.0.0"]["relative_change"].to_numpy() == pytest.approx(expected)
    folder = study.report.with_name(f"{study.report.stem}-changes-seed0")
    assert len(list(folder.glob("*/report-cka-params.html"))) == len(STAGE_CHANGES)


def test_routes_must_be_known_before_anything_trains(tmp_path):
    for routes in ((), ("fine-tune", "transfer"), ["Scratch"]):
        with pytest.raises(ValueError, match="routes must name one or more of"):
            double_finetune("synthetic", "synthetic", seeds=(0,), routes=routes, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_study_of_some_routes_trains_only_those_and_shares_their_runs(small_synthetic, tmp_path, monkeypatch):
    import artlab.experiments.double as double
    from artlab.runs import Run

    manifest = str(small_synthetic.root / "manifest.csv")
    source = TrainConfig(data=manifest, task="style", epochs=1)
    target = TrainConfig(data=manifest, task="medium", epochs=1, batch_size=16)
    runs = tmp_path / "runs"
    options = {"image_size": 32, "device": "cpu", "runs_dir": runs, "name": "some"}
    study = double_finetune(source, target, seeds=(0,), routes=(ROUTES[3], ROUTES[2]), **options)  # any order
    assert study.cells["route"].tolist() == [ROUTES[2], ROUTES[3], "source stage"]
    assert sorted(p.name for p in runs.iterdir() if Run(p).finished) == [  # no scratch, no off-the-shelf ("apart":
        f"some-apart-{run}-seed0" for run in ("double_fine_tune", "fine_tune", "source")]  # one collection, kept out
    cells = study.cells.set_index("route")["accuracy"]
    assert study.difference["double - single"].tolist() == pytest.approx([cells[ROUTES[3]] - cells[ROUTES[2]]])
    # a study of fewer routes, under the same name: the same runs, reused; no pair, no difference
    real_train = double.train

    def reuse_only(config, runs_dir, resume):
        assert Run(Path(runs_dir) / config.name).finished, f"{config.name} was trained again"
        return real_train(config, runs_dir, resume)

    monkeypatch.setattr(double, "train", reuse_only)
    fewer = double_finetune(source, target, seeds=(0,), routes=[ROUTES[3]], **options)
    assert fewer.cells["route"].tolist() == [ROUTES[3], "source stage"] and fewer.difference.empty
    assert fewer.cells.set_index("route").loc[ROUTES[3], "accuracy"] == cells[ROUTES[3]]
    assert fewer.report.is_file() and fewer.run(ROUTES[3], 0) == study.run(ROUTES[3], 0)
    # no route starts from the source stage: it is not trained (nor reused), and the report says nothing of it
    single = double_finetune(source, target, seeds=(0,), routes=ROUTES[2], **options)
    assert single.cells["route"].tolist() == [ROUTES[2]] and "kept out" not in single.cells
    assert "source stage" not in single.report.read_text()
