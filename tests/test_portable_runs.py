"""Portable runs: a finished run and its collection moved together (to another place or machine) are evaluated,
reused and analysed where they are now, found by their signatures, without training again."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

import artlab.training.api as api
from artlab.analysis import Comparison, analyze
from artlab.cli import main
from artlab.runs import Run, run_collection
from artlab.runs import split as splits
from artlab.training import TrainConfig, evaluate_run, train


def _painting(path: Path, seed: int, size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


def _folders(root: Path, seed: int = 0) -> Path:
    """A collection of class folders: 3 styles x 10 distinct images."""
    for c in range(3):
        for i in range(10):
            _painting(root / f"style{c}" / f"p{i}.png", seed + 100 * c + i)
    return root


def _config(data: Path, strategy: str = "fine_tune", **overrides) -> TrainConfig:
    return TrainConfig(**{"data": str(data), "task": "label", "strategy": strategy, "image_size": 32, "epochs": 1,
                          "batch_size": 8, "device": "cpu", "freeze": 15, "name": strategy} | overrides)


def _copy(source: Path, target: Path) -> None:
    """As another machine receives it: new modification times (shutil.copy keeps none)."""
    shutil.copytree(source, target, copy_function=shutil.copy)


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory):
    """This module's cache: its packs hold this module's entries, not everything the session cached before."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ARTLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """Two finished runs (fine-tuned, off the shelf) trained in one place, then moved with their collection to
    another (the first place removed); with the metrics they had."""
    here, there = tmp_path_factory.mktemp("here"), tmp_path_factory.mktemp("there")
    data = _folders(here / "data" / "mini")
    before = {s: train(_config(data, s), runs_dir=here / "runs").metrics for s in ("fine_tune", "off_the_shelf")}
    _copy(here / "data", there / "data")
    _copy(here / "runs", there / "runs")
    shutil.rmtree(here)
    return there, before


def _refuse(*args, **kwargs):
    raise AssertionError("computed again")


@pytest.fixture
def no_training(monkeypatch):
    """Training of any kind fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("trained again")
    monkeypatch.setattr(api, "fit", refuse)
    monkeypatch.setattr(api, "fit_probe", refuse)


def test_split_records_paths_relative_to_the_collection(moved):
    there, _ = moved
    run = Run(there / "runs" / "fine_tune")
    recorded = pd.read_csv(run.file("split.csv"))
    assert sorted(recorded["path"])[:2] == ["style0/p0.png", "style0/p1.png"]
    assert json.loads(run.file("split.json").read_text())["root"].endswith("/data/mini")


@pytest.mark.parametrize("strategy", ["fine_tune", "off_the_shelf"])
def test_a_moved_run_evaluates_on_its_collection_at_the_new_place(moved, strategy, no_training, monkeypatch):
    there, before = moved
    run, data = there / "runs" / strategy, there / "data" / "mini"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every image found, unchanged: not a word
        again = evaluate_run(run, data=data)
    assert again["accuracy"] == before[strategy]["accuracy"] and again["n_images"] == before[strategy]["n_images"]
    assert again["images_missing_since_training"] == again["images_changed_since_training"] == 0

    monkeypatch.setenv("ARTLAB_DATA", str(there / "data"))  # a workshop's folder of collections
    assert evaluate_run(run)["accuracy"] == before[strategy]["accuracy"]
    monkeypatch.delenv("ARTLAB_DATA")
    with pytest.raises(FileNotFoundError, match=r"none of its 30 images is where it recorded them .*moved\? give "
                                                 r"the collection's new folder as `data`, or set ARTLAB_DATA"):
        evaluate_run(run)
    (there / "data" / "mini" / "style0" / "p0.png").rename(there / "p0.png")  # one image lost in the move
    try:
        with pytest.warns(UserWarning, match=r"1 of its 30 images are missing"):
            assert evaluate_run(run, data=there / "data" / "mini")["images_missing_since_training"] == 1
    finally:
        (there / "p0.png").rename(there / "data" / "mini" / "style0" / "p0.png")


def test_artlab_eval_takes_the_collection_at_its_new_place(moved, no_training, capsys):
    there, before = moved
    assert main(["eval", str(there / "runs" / "fine_tune"), "--data", str(there / "data" / "mini")]) == 0
    assert f"accuracy: {before['fine_tune']['accuracy']:.4f}" in capsys.readouterr().out


def test_a_moved_run_is_reused_by_content_and_analysed_where_it_is(moved, no_training):
    there, before = moved
    run = Run(there / "runs" / "fine_tune")
    config_file = run.file("config.yaml").read_bytes()
    reused = train(_config(there / "data" / "mini"), runs_dir=there / "runs", resume=True)  # a notebook's `data`
    assert reused.run.path == run.path and reused.metrics == before["fine_tune"]
    assert run.file("config.yaml").read_bytes() == config_file  # read, never written
    assert run_collection(run).table["path"].str.startswith(str((there / "data" / "mini").resolve())).all()
    analysis = analyze(Comparison(run.path, what=("params", "cka", "topk"), k=3), out_dir=there / "analysis")
    assert (there / "analysis").is_dir() and len(analysis.tables["params_blocks"])
    with pytest.MonkeyPatch.context() as patch:  # the same analyses again: from the cache, no forward pass
        patch.setattr("artlab.analysis.onepass.forward_pass", _refuse)
        again = analyze(Comparison(run.path, what=("params", "cka", "topk"), k=3), out_dir=there / "again")
    for table in ("cka", "cka_matrix", "topk_overlap", "topk_entropy"):
        pd.testing.assert_frame_equal(again.tables[table], analysis.tables[table])
    assert again.tops["ImageNet"].images("features.18", 0) == \
        analysis.tops["ImageNet"].images("features.18", 0)


def test_a_different_collection_at_the_new_place_is_refused_not_reused(moved, tmp_path, no_training, monkeypatch):
    there, _ = moved
    other = _folders(tmp_path / "mini", seed=5000)  # the same file names, other paintings
    with pytest.raises(ValueError, match=r"is not the collection run fine_tune trained on: none of its 30 images"):
        evaluate_run(there / "runs" / "fine_tune", data=other)
    monkeypatch.setattr(splits, "_MOVED", {})
    monkeypatch.setenv("ARTLAB_DATA", str(tmp_path))  # found by its folder's name alone: refused all the same
    with pytest.raises(ValueError, match=r"is not the collection run fine_tune trained on"):
        evaluate_run(there / "runs" / "fine_tune")
    with pytest.raises(ValueError, match=r"different config \(differs in \['data'\]\)"):
        train(_config(other), runs_dir=there / "runs", resume=True)


def test_a_run_written_with_absolute_paths_still_reads_and_moves(tmp_path, no_training):
    """Runs recorded before paths were relative (absolute paths, no root in split.json) read where they are, and
    at a new place given as `data`."""
    data = _folders(tmp_path / "a" / "mini")
    result = _train_unpatched(_config(data), tmp_path / "a" / "runs")
    run = result.run
    table = pd.read_csv(run.file("split.csv"), dtype=str, keep_default_na=False)
    table["path"] = [str(data.resolve() / p) for p in table["path"]]
    table.to_csv(run.file("split.csv"), index=False)
    digest = hashlib.sha256(run.file("split.csv").read_bytes()).hexdigest()
    run.file("split.json").write_text(json.dumps({"rows": len(table), "sha256": digest}))
    assert evaluate_run(run)["accuracy"] == result.metrics["accuracy"]
    _copy(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(data)
    moved = evaluate_run(tmp_path / "b" / "runs" / "fine_tune", data=tmp_path / "b" / "mini")
    assert moved["accuracy"] == result.metrics["accuracy"] and moved["images_missing_since_training"] == 0


def test_a_run_trained_on_a_gpu_opens_on_a_cpu_only_machine(moved, no_training, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    there, before = moved
    _copy(there / "runs" / "fine_tune", tmp_path / "gpu")
    config = yaml.safe_load((tmp_path / "gpu" / "config.yaml").read_text().split("# end")[0])
    text = (tmp_path / "gpu" / "config.yaml").read_text().replace("device: cpu", "device: cuda")
    assert config["device"] == "cpu" and "device: cuda" in text
    (tmp_path / "gpu" / "config.yaml").write_text(text)
    assert evaluate_run(tmp_path / "gpu", data=there / "data" / "mini")["accuracy"] == before["fine_tune"]["accuracy"]


def _train_unpatched(config: TrainConfig, runs: Path):
    """Train with the real loop although `no_training` is active for the rest of the test."""
    import artlab.training.loops as loops

    saved = api.fit
    api.fit = loops.fit
    try:
        return train(config, runs_dir=runs)
    finally:
        api.fit = saved


def test_locate_prefers_the_given_then_the_moved_then_the_recorded_folder(tmp_path, monkeypatch):
    then, now, elsewhere = tmp_path / "then" / "c", tmp_path / "now" / "c", tmp_path / "env" / "c"
    for folder in (now, elsewhere):
        folder.mkdir(parents=True)
    monkeypatch.setenv("ARTLAB_DATA", str(tmp_path / "env"))
    assert splits.locate(then) == elsewhere.resolve()  # gone: found by name under $ARTLAB_DATA
    monkeypatch.setitem(splits._MOVED, str(then), now)
    assert splits.locate(then) == now  # where this process found it
    assert splits.locate(then, data=elsewhere) == elsewhere.resolve()  # given


def _teacher_prepares(there: Path, out: Path, monkeypatch) -> None:
    """What a teacher shows before packing: the probe evaluated (its features cached) and the fine-tuned run
    analysed (its pass cached), on the collection where it moved to."""
    monkeypatch.setenv("ARTLAB_DATA", str(there / "data"))
    evaluate_run(there / "runs" / "off_the_shelf")
    analyze(Comparison(there / "runs" / "fine_tune", what=("cka", "topk"), k=3), out_dir=out)


# ---- workshop packs ---------------------------------------------------------------------------------------
def test_a_pack_round_trip_brings_runs_images_and_caches_and_trains_nothing(moved, tmp_path, monkeypatch,
                                                                              no_training, capsys):
    from artlab.cache import cache_dir

    there, before = moved
    _teacher_prepares(there, tmp_path / "teacher", monkeypatch)
    assert main(["pack", str(tmp_path / "w.zip"), "--runs-dir", str(there / "runs"), "--images"]) == 0
    assert "pack: " in capsys.readouterr().out
    monkeypatch.setenv("ARTLAB_CACHE", str(tmp_path / "laptop-cache"))  # an attendee's machine: nothing cached
    laptop = tmp_path / "laptop"
    assert main(["unpack", str(tmp_path / "w.zip"), "--to", str(laptop)]) == 0
    printed = capsys.readouterr().out
    assert f"ARTLAB_DATA={(laptop / 'data').resolve()}" in printed and "2 run(s)" in printed
    assert sorted(p.name for p in (laptop / "data" / "mini").iterdir()) == ["style0", "style1", "style2"]
    assert (cache_dir() / "features").is_dir()  # the off-the-shelf run's features came along
    monkeypatch.setenv("ARTLAB_DATA", str(laptop / "data"))
    monkeypatch.setattr(splits, "_MOVED", {})  # a new process on the laptop: nothing found elsewhere yet
    assert evaluate_run(laptop / "runs" / "fine_tune")["accuracy"] == before["fine_tune"]["accuracy"]
    with monkeypatch.context() as patch:  # the probe's features come from the pack's cache: no forward pass
        patch.setattr("artlab.features.forward_pass", _refuse)
        assert evaluate_run(laptop / "runs" / "off_the_shelf")["accuracy"] == before["off_the_shelf"]["accuracy"]
    with monkeypatch.context() as patch:  # the teacher's analyses too
        patch.setattr("artlab.analysis.onepass.forward_pass", _refuse)
        shown = analyze(Comparison(laptop / "runs" / "fine_tune", what=("cka", "topk"), k=3), out_dir=tmp_path / "a")
    assert shown.tops["ImageNet"].paths[0].startswith(str((laptop / "data" / "mini").resolve()))
    # unpacking again adds nothing and replaces nothing; a different file in the way is refused, nothing written
    assert main(["unpack", str(tmp_path / "w.zip"), "--to", str(laptop)]) == 0
    assert "0 file(s) written" in capsys.readouterr().out
    (laptop / "runs" / "fine_tune" / "history.csv").write_text("edited\n")
    assert main(["unpack", str(tmp_path / "w.zip"), "--to", str(laptop)]) == 2
    assert "differ from those already here" in capsys.readouterr().err


def test_a_pack_of_some_runs_leaves_out_the_features_of_the_others(moved, tmp_path):
    import zipfile

    from artlab.features import cached_features
    from artlab.io import read_metadata
    from artlab.runs import Network

    there, _ = moved
    runs = there / "runs"
    paths = Run(runs / "fine_tune").split_table()["path"].tolist()[:4]
    cached_features(Network.of(runs / "fine_tune"), "features.18", paths, 32, "cpu", 4)  # the fine-tuned network's
    cached_features(Network.of("imagenet", "mobilenet_v2"), "features.18", paths, 32, "cpu", 4)
    assert main(["pack", str(tmp_path / "one.zip"), "off_the_shelf", "--runs-dir", str(runs)]) == 0
    with zipfile.ZipFile(tmp_path / "one.zip") as archive:
        archive.extractall(tmp_path / "one", [m for m in archive.namelist() if m.startswith("cache/features/")])
    packed = {read_metadata(p)["weights"] for p in (tmp_path / "one" / "cache" / "features").iterdir()}
    tuned = Run(runs / "fine_tune").weights_id()
    assert tuned not in packed and "imagenet:mobilenet_v2-b0353104.pth" in packed  # what the probe reads
    assert main(["pack", str(tmp_path / "both.zip"), "--runs-dir", str(runs)]) == 0
    with zipfile.ZipFile(tmp_path / "both.zip") as archive:
        archive.extractall(tmp_path / "both", [m for m in archive.namelist() if m.startswith("cache/features/")])
    both = {read_metadata(p)["weights"] for p in (tmp_path / "both" / "cache" / "features").iterdir()}
    assert both == packed | {tuned}  # with the fine-tuned run, its features go along


def test_a_pack_from_a_newer_artlab_or_an_unsafe_one_is_refused(moved, tmp_path):
    import zipfile

    from artlab.runs.pack import PackError, pack, unpack

    there, _ = moved
    made = pack(tmp_path / "w.zip", ["fine_tune"], there / "runs")
    with zipfile.ZipFile(made) as archive:
        manifest = json.loads(archive.read("pack.json"))
    for name, members in {"newer.zip": {"pack.json": json.dumps(manifest | {"artlab": "9.0.0"})},
                          "unsafe.zip": {"pack.json": json.dumps(manifest), "runs/../../evil.txt": "x"}}.items():
        with zipfile.ZipFile(tmp_path / name, "w") as archive:
            for member, text in members.items():
                archive.writestr(member, text)
    with pytest.raises(PackError, match=r"packed by artlab 9.0.0 .* install artlab 9.0.0 to unpack it"):
        unpack(tmp_path / "newer.zip", tmp_path / "x")
    with pytest.raises(PackError, match=r"member 'runs/../../evil.txt' is not where a pack keeps files"):
        unpack(tmp_path / "unsafe.zip", tmp_path / "x")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "x").exists()


def test_content_keys_read_multi_label_cells_as_split_csv_writes_them():
    table = pd.DataFrame({"path": ["/a/x.png"], "split": ["train"], "tags": [("b", "a")], "signature": ["3:9:ab"]})
    text = pd.DataFrame({"path": ["x.png"], "split": ["train"], "tags": ['["b", "a"]'], "signature": ["3:1:ab"]})
    key = splits.content_key(table, Path("/a"), {"tags": True})
    assert key == splits.content_key(text, Path("/a"), {"tags": True})  # another time, the same content
    assert key != splits.content_key(text.assign(tags='["a"]'), Path("/a"), {"tags": True})
    assert key != splits.content_key(text.assign(split="test"), Path("/a"), {"tags": True})


# ---- images at a chosen size: stand-ins -----------------------------------------------------------------
def test_a_pack_with_images_at_a_chosen_size_shows_the_teachers_results(moved, tmp_path, monkeypatch, no_training,
                                                                          capsys):
    """Images shrunk to 32 px travel as stand-ins: the runs open on them unchanged, are reused by content, and the
    teacher's features and analyses are served for them without a forward pass."""
    from artlab.data.standins import LINKS_FILE, original_of

    there, before = moved
    _teacher_prepares(there, tmp_path / "teacher", monkeypatch)
    assert main(["pack", str(tmp_path / "full.zip"), "--runs-dir", str(there / "runs"), "--images"]) == 0
    assert main(["pack", str(tmp_path / "w.zip"), "--runs-dir", str(there / "runs"), "--image-size", "32"]) == 0
    assert "30 image(s) shrunk to 32 px" in capsys.readouterr().out
    assert (tmp_path / "w.zip").stat().st_size < (tmp_path / "full.zip").stat().st_size
    monkeypatch.setenv("ARTLAB_CACHE", str(tmp_path / "laptop-cache"))
    laptop = tmp_path / "laptop"
    assert main(["unpack", str(tmp_path / "w.zip"), "--to", str(laptop)]) == 0
    capsys.readouterr()
    shrunk = sorted((laptop / "data" / "mini").rglob("*.png"))
    assert len(shrunk) == 30 and {Image.open(p).size for p in shrunk} == {(32, 32)}
    assert (laptop / "data" / "mini" / LINKS_FILE).is_file() and all(map(original_of, shrunk))
    monkeypatch.setenv("ARTLAB_DATA", str(laptop / "data"))
    monkeypatch.setattr(splits, "_MOVED", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no image reported missing or changed
        evaluated = evaluate_run(laptop / "runs" / "fine_tune")
    assert evaluated["images_shrunk_stand_ins"] == evaluated["n_images"] > 0
    reused = train(_config(laptop / "data" / "mini"), runs_dir=laptop / "runs", resume=True)  # matched by content
    assert reused.run.path == laptop / "runs" / "fine_tune" and reused.metrics == before["fine_tune"]
    with monkeypatch.context() as patch:  # the probe's features: the teacher's, computed from the originals
        patch.setattr("artlab.features.forward_pass", _refuse)
        assert evaluate_run(laptop / "runs" / "off_the_shelf")["accuracy"] == before["off_the_shelf"]["accuracy"]
    with monkeypatch.context() as patch:
        patch.setattr("artlab.analysis.onepass.forward_pass", _refuse)
        shown = analyze(Comparison(laptop / "runs" / "fine_tune", what=("cka", "topk"), k=3), out_dir=tmp_path / "a")
    assert shown.tops["ImageNet"].paths[0].startswith(str((laptop / "data" / "mini").resolve()))


@pytest.fixture
def stand_ins(moved, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """The moved runs packed with their images at 36 px and unpacked on a laptop whose cache is this test's: the
    teacher's collection and the laptop's."""
    there, _ = moved
    monkeypatch.setenv("ARTLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ARTLAB_DATA", str(there / "data"))
    assert main(["pack", str(tmp_path / "w.zip"), "--runs-dir", str(there / "runs"), "--image-size", "36"]) == 0
    assert main(["unpack", str(tmp_path / "w.zip"), "--to", str(tmp_path / "laptop")]) == 0
    return there / "data" / "mini", tmp_path / "laptop" / "data" / "mini"


def test_what_is_computed_from_a_stand_in_is_never_served_for_its_original(stand_ins, monkeypatch):
    from artlab.data.standins import fingerprints, original_id
    from artlab.features import cached_features
    from artlab.runs import Network

    teacher, laptop = stand_ins
    originals = sorted(str(p) for p in teacher.rglob("*.png"))[:4]
    shrunk = [str(laptop / Path(p).relative_to(teacher)) for p in originals]
    assert [original_id(s) for s in shrunk] == [original_id(p) for p in originals]
    assert len(fingerprints(originals)) == 1 and len(fingerprints(shrunk)) == 2  # originals stand for nothing else
    network = Network.of("imagenet", "mobilenet_v2")
    calls = []
    import artlab.features as features

    real = features.forward_pass
    monkeypatch.setattr(features, "forward_pass", lambda *a, **k: calls.append(1) or real(*a, **k))
    on_stand_ins = cached_features(network, "features.3", shrunk, 32, "cpu", 4)  # in no pack: computed here
    on_originals = cached_features(network, "features.3", originals, 32, "cpu", 4)
    assert len(calls) == 2 and not np.allclose(on_stand_ins, on_originals)  # not served the stand-ins' values
    assert np.array_equal(cached_features(network, "features.3", shrunk, 32, "cpu", 4), on_originals)
    assert len(calls) == 2  # the other way round, the original's values serve its stand-in
    import artlab.interpret.attribution as attribution

    model, prepared = network.build(), []
    real_prepare = attribution._prepare
    monkeypatch.setattr(attribution, "_prepare", lambda *a, **k: prepared.append(1) or real_prepare(*a, **k))
    on_stand_in = attribution.attribute(model, shrunk[0], image_size=32)  # computed here, kept as the stand-in's
    on_original = attribution.attribute(model, originals[0], image_size=32)
    assert len(prepared) == 2 and not np.allclose(on_stand_in.map, on_original.map)
    assert np.array_equal(attribution.attribute(model, shrunk[0], image_size=32).map, on_original.map)
    assert len(prepared) == 2


def test_an_edited_stand_in_or_a_damaged_links_file_is_not_taken_for_its_original(stand_ins, moved, tmp_path,
                                                                                   monkeypatch):
    from artlab.data.standins import LINKS_FILE, original_of
    from artlab.runs.pack import pack
    from artlab.training.holdout import Holdout

    teacher, data = stand_ins
    stand_in = data / "style0" / "p0.png"
    assert original_of(stand_in) is not None
    target, source = (api.prepare_collection(_config(folder)) for folder in (teacher, data))
    held = target.table["split"].isin(["val", "test"])
    shrunk_held = [str(data / Path(p).relative_to(teacher)) for p in target.table["path"][held]]
    assert Holdout.of(target).matching(shrunk_held) == shrunk_held  # an earlier stage trained on them is refused
    with monkeypatch.context() as patch:  # by content alone, not because the copies look alike
        patch.setattr("artlab.training.holdout.LOOK_ALIKE_BITS", -1)
        assert api.shares_images(source, target) and api.keep_apart(_config(data), [_config(teacher)]).keep_out
    kept_out = Holdout.of(target).identical(source)  # a source of stand-ins: those of held-out originals are refused
    assert 0 < kept_out.sum() == held.sum()
    assert set(source.table["path"][kept_out].map(lambda p: Path(p).relative_to(data))) == \
        set(target.table["path"][held].map(lambda p: Path(p).relative_to(teacher)))
    _painting(stand_in, seed=999, size=32)  # edited: now just another image
    assert original_of(stand_in) is None
    with pytest.warns(UserWarning, match=r"0 of its 30 images are missing and 1 changed"):
        evaluate_run(tmp_path / "laptop" / "runs" / "fine_tune", data=data)
    (data / LINKS_FILE).write_text('{"format": 1, "images": {"style0/p1.png": {"sha1": 1}}}')
    with pytest.warns(RuntimeWarning, match=rf"{LINKS_FILE} is damaged or unreadable .* count as images of their own"):
        assert original_of(data / "style0" / "p1.png") is None  # stops nothing: the images are just images
    assert original_of(data / "style0" / "p2.png") is None
    (data / LINKS_FILE).write_text('{"format": 99, "images": {}}')
    with pytest.warns(RuntimeWarning, match=r"written by a later artlab \(format 99\): update artlab"):
        assert original_of(data / "style0" / "p2.png") is None
    (data / LINKS_FILE).unlink()  # copied without its hidden file: the error says what is missing
    with pytest.raises(ValueError, match=rf"all are smaller: if they are a workshop pack's shrunk images, its links "
                                         rf"file {LINKS_FILE} must be in that folder too"):
        evaluate_run(tmp_path / "laptop" / "runs" / "fine_tune", data=data)
    with pytest.raises(ValueError, match="image_size=16: give at least 32 pixels"):
        pack(tmp_path / "x.zip", runs_dir=moved[0] / "runs", images=True, image_size=16)


def test_a_run_is_not_resumed_on_stand_ins_and_a_pack_of_a_pack_keeps_the_first_originals(stand_ins, moved, tmp_path,
                                                                                         monkeypatch):
    from artlab.cache import content_id
    from artlab.data.standins import original_of

    teacher, data = stand_ins
    laptop = data.parent.parent
    unfinished = tmp_path / "elsewhere" / "fine_tune"
    _copy(laptop / "runs" / "fine_tune", unfinished)
    (unfinished / "metrics.json").unlink()
    recorded = Path(Run(unfinished).config()["data"])  # the stand-ins where the teacher's images were
    assert not recorded.exists()
    _copy(data, recorded)
    try:
        with pytest.raises(ValueError, match=r"cannot resume .*30 of the images it trained on are here as a "
                                             r"workshop pack's shrunk stand-ins"):
            train(_config(recorded), runs_dir=unfinished.parent, resume=True)
    finally:
        shutil.rmtree(recorded)
    monkeypatch.setenv("ARTLAB_DATA", str(laptop / "data"))  # an attendee packs again, shrinking further or not
    monkeypatch.setattr(splits, "_MOVED", {})  # in a new process on the laptop
    assert main(["pack", str(tmp_path / "again.zip"), "--runs-dir", str(laptop / "runs"), "--image-size", "32"]) == 0
    assert main(["pack", str(tmp_path / "as-is.zip"), "--runs-dir", str(laptop / "runs"), "--images"]) == 0
    for pack in ("again", "as-is"):
        assert main(["unpack", str(tmp_path / f"{pack}.zip"), "--to", str(tmp_path / pack)]) == 0
        for path in (tmp_path / pack / "data" / "mini").rglob("*.png"):
            assert original_of(path).sha1 == content_id(teacher / path.relative_to(tmp_path / pack / "data" / "mini"))
    assert {Image.open(p).size for p in (tmp_path / "again" / "data" / "mini").rglob("*.png")} == {(32, 32)}


def test_an_attendee_resumes_a_run_of_their_own_on_stand_ins_and_two_packs_unpack_into_one_place(stand_ins, tmp_path):
    import zipfile

    from artlab.data.standins import LINKS_FILE

    _, data = stand_ins
    own = train(_config(data, name="own"), runs_dir=tmp_path / "own").run  # trained on the stand-ins themselves
    own.file("metrics.json").unlink()
    assert train(_config(data, name="own"), runs_dir=tmp_path / "own", resume=True).run.finished
    packed = tmp_path / "w.zip"  # the stand_ins fixture's pack
    with zipfile.ZipFile(packed) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    links = json.loads(members[f"data/mini/{LINKS_FILE}"])
    first, second = sorted(links["images"])[:2]
    for name, change in (("fewer", lambda images: images.pop(first)),
                         ("clashing", lambda images: images[second].update(sha1="0" * 40))):
        record = json.loads(members[f"data/mini/{LINKS_FILE}"])
        change(record["images"])
        with zipfile.ZipFile(tmp_path / f"{name}.zip", "w") as archive:
            for member, content in members.items():
                archive.writestr(member, json.dumps(record) if member.endswith(LINKS_FILE) else content)
    laptop = data.parent.parent
    assert main(["unpack", str(tmp_path / "fewer.zip"), "--to", str(laptop)]) == 0  # a pack of fewer images: merged
    assert json.loads((data / LINKS_FILE).read_text()) == links
    assert main(["unpack", str(tmp_path / "clashing.zip"), "--to", str(laptop)]) == 2
    assert json.loads((data / LINKS_FILE).read_text()) == links  # refused whole


def test_a_stand_in_keeps_its_originals_format(tmp_path):
    from artlab.data.standins import shrink

    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    for kind, name in (("JPEG", "a.jpg"), ("PNG", "a.png"), ("WEBP", "a.webp"), ("TIFF", "a.tif"), ("BMP", "a.bmp"),
                       ("GIF", "a.gif"), ("PPM", "a.ppm")):
        picture.save(tmp_path / name, format=kind)
        assert shrink(tmp_path / name, tmp_path / "small" / name, 40)
        with Image.open(tmp_path / "small" / name) as small:
            assert small.format == (kind if kind != "PPM" else "PNG") and small.size == (40, 30)
    assert not shrink(tmp_path / "a.png", tmp_path / "same.png", 80)  # already that small: packed as it is
    assert not (tmp_path / "same.png").exists()
