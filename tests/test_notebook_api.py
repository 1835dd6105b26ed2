"""What the notebook series calls: quick settings, the collection summary and browser, the strategy and change
explorers (driven through their real ipywidgets controls)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from artlab import models
from artlab.data import collection_summary, examples, load
from artlab.experiments import notebook_settings
from artlab.experiments.settings import QUICK
from artlab.widgets import ChangeExplorer, CollectionBrowser, StrategyExplorer
from artlab.widgets.collection import EVERY_CLASS


def _control(explorer, description: str):
    box = explorer.widget()
    return next(c for c in box.children[0].children if c.description == description)


def _images_shown(figure) -> int:
    return sum(trace.type == "image" for trace in figure.data)


def _manifest(collection) -> str:
    return str(collection.root / "manifest.csv")


# ---- quick ------------------------------------------------------------------------------------------
def test_quick_false_keeps_every_value_in_order():
    settings = notebook_settings(False, data="/art/genres", task="label", image_size=128, epochs=10, k=100)
    assert list(settings.values()) == ["/art/genres", "label", 128, 10, 100] and settings.changed == {}
    assert settings.data == "/art/genres" and settings["k"] == 100 and "quick = False" in repr(settings)


def test_quick_true_shrinks_the_work_on_the_collection_given(one_task):
    settings = notebook_settings(True, data=str(one_task), task="label", image_size=128, epochs=10, k=100,
                                 layer="features.17", method="tsne")
    data, task, image_size, epochs, k, layer, method = settings.values()
    assert (data, task, image_size, epochs, k) == (str(one_task), "label", 64, 1, 10)
    assert (layer, method) == ("features.17", "tsne"), "parameters quick does not name keep their value"
    assert settings.changed == {"image_size": 128, "epochs": 10, "k": 100}
    assert "(given: 128)" in repr(settings) and "quick = True" in repr(settings)


def test_a_task_the_collection_lacks_becomes_its_first_and_says_why(one_task, small_synthetic):
    settings = notebook_settings(False, data=str(one_task), task="style", by="medium")
    assert dict(settings) == {"data": str(one_task), "task": "label", "by": "label"}
    assert f"(given: 'style': {one_task.name} has no such task; its tasks: label)" in repr(settings)
    assert notebook_settings(False, data="synthetic", task=None).task == "style"  # None: the first task
    assert notebook_settings(True, data="synthetic", task="artist").changed == {}  # a task it has is kept
    double = notebook_settings(True, source="synthetic", source_task="artist", target=str(one_task),
                               target_task="medium")
    assert (double.source_task, double.target_task) == ("artist", "label")
    unreadable = notebook_settings(True, data=str(one_task / "nothing-here"), task="style")
    assert unreadable.task == "style" and unreadable.changed == {}  # the notebook's loading cell says why


def test_a_multi_task_notebook_keeps_the_tasks_the_collection_has(one_task):
    manifest = _manifest(load("synthetic"))
    assert notebook_settings(True, data=manifest, tasks=["artist", "material", "style"]).tasks == ["artist", "style"]
    completed = notebook_settings(True, data=manifest, tasks=["artist", "material"])
    assert completed.tasks == ["artist", "style"] and "has no task material" in repr(completed)
    assert notebook_settings(False, tasks=["artist", "material"]).tasks == ["artist", "material"]  # no collection
    single = notebook_settings(False, data=str(one_task), tasks=["style", "artist"])
    assert (single.data, single.tasks) == ("synthetic", ["style", "artist"])
    assert "it has one task (label), and multi-task learning needs two" in repr(single)


def test_quick_values_are_copies_and_quick_must_be_a_bool():
    settings = notebook_settings(True, seeds=[0, 1, 2])
    settings.seeds.append(7)
    assert QUICK["seeds"] == [0] and notebook_settings(True, seeds=[5]).seeds == [0]
    with pytest.raises(TypeError, match="quick must be True or False"):
        notebook_settings("False", data="synthetic")
    with pytest.raises(AttributeError, match="no setting 'epochs'"):
        _ = notebook_settings(True, data="x").epochs


# ---- the collection ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quirky(small_synthetic, tmp_path_factory):
    """A folder collection of 3 classes (5, 5 and 2 images): one file copied under a second name, one broken file."""
    root = tmp_path_factory.mktemp("quirky")
    table = small_synthetic.table
    for style, count in (("cubism", 5), ("drip", 5), ("mondrian", 2)):
        (root / style).mkdir()
        for path in table[table["style"] == style]["path"].head(count):
            shutil.copy(path, root / style / Path(path).name)
    first = sorted((root / "cubism").iterdir())[0]
    shutil.copy(first, root / "drip" / "copy_of_a_cubist_work.png")
    (root / "drip" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return root


def test_collection_summary_counts_formats_skipped_and_copies(quirky):
    collection = load(quirky).check_images()
    summary = collection_summary(collection)
    expected = Counter(p.parent.name for p in quirky.rglob("*.*") if p.name != "broken.jpg")
    assert summary.classes["label"]["total"].to_dict() == dict(expected)
    assert summary.skipped["path"].tolist() == [str(quirky / "drip" / "broken.jpg")]
    assert summary.skipped["reason"].iloc[0], "every skipped file carries its reason"
    assert sorted(Path(p).name for p in summary.duplicates["path"]) == sorted(
        ["copy_of_a_cubist_work.png", sorted((quirky / "cubism").iterdir())[0].name])
    assert summary.duplicates["group"].nunique() == 1
    files = summary.files.set_index("statistic")["value"]
    assert files["format PNG"] == sum(expected.values()) and files["skipped files"] == 1
    text = repr(summary)
    assert f"{sum(expected.values())} usable images" in text and "1 file(s) or row(s) skipped" in text
    assert "byte-identical" in text
    assert len(summary.chart("label").data) >= 1
    with pytest.raises(RuntimeError, match="check_images"):
        collection_summary(load(quirky))


def test_examples_are_reproducible_and_per_class(small_synthetic):
    picked = examples(small_synthetic, "style", per_class=3, seed=1)
    assert picked.groupby("class").size().to_dict() == dict.fromkeys(small_synthetic.classes("style"), 3)
    assert picked["class"].tolist() == sorted(picked["class"]), "class by class, in class order"
    style_of = dict(zip(small_synthetic.table["path"], small_synthetic.table["style"]))
    assert all(style_of[p] == c for p, c in zip(picked["path"], picked["class"]))
    assert picked.equals(examples(small_synthetic, "style", per_class=3, seed=1))
    only = examples(small_synthetic, "artist", per_class=100, classes=["drip_a"])
    assert len(only) == (small_synthetic.table["artist"] == "drip_a").sum()
    with pytest.raises(KeyError, match="no class 'baroque'"):
        examples(small_synthetic, "style", classes=["baroque"])


def test_collection_browser(quirky, small_synthetic):
    collection = load(quirky).check_images()
    browser = CollectionBrowser(collection, per_class=4, n=10)
    overview = browser.figure()
    # a row of 4 cells per class: mondrian's 2 images leave 2 empty cells, so the rows stay aligned
    assert _images_shown(overview) == 4 + 4 + 2 and browser.computed["thumbnails"] == 1
    titles = [a.text for a in overview.layout.annotations]
    assert titles[:4] == ["cubism"] * 4 and titles[8:10] == ["mondrian"] * 2
    _control(browser, "class").value = "drip"
    assert browser.shown == "drip" and browser.computed["thumbnails"] == 2
    assert _images_shown(browser.figure()) == 6  # 5 works and the copy; the broken file was skipped
    facts = browser.view()[1]["value"]
    assert facts["total images"] == 6
    _control(browser, "class").value = EVERY_CLASS
    assert browser.computed["thumbnails"] == 2, "grids already drawn are reused"
    with pytest.raises(KeyError, match="no class 'baroque'"):
        browser.select(shown="baroque")
    several = CollectionBrowser(small_synthetic, task="style", per_class=2)
    _control(several, "task").value = "medium"
    assert several.task == "medium" and several.shown == EVERY_CLASS
    assert list(_control(several, "class").options) == [EVERY_CLASS, *small_synthetic.classes("medium")]
    assert _images_shown(several.figure()) == 2 * 3


def test_a_task_with_many_classes_gets_a_row_each_with_the_same_gaps(small_synthetic):
    """People-Art has 43 styles: one row per class, rows as far apart in pixels as in a grid of two."""
    import numpy as np

    from artlab.plots import ROW_GAP, image_grid

    artists = CollectionBrowser(small_synthetic, task="artist", per_class=2).figure()  # 24 classes, 24 rows
    assert _images_shown(artists) == 2 * 24

    def gap(rows: int) -> float:
        figure = image_grid([np.zeros((4, 4, 3), np.uint8)] * rows, ["x"] * rows, "t", columns=1)
        return (figure.layout.yaxis.domain[0] - figure.layout.yaxis2.domain[1]) * figure.layout.height

    assert gap(2) == pytest.approx(ROW_GAP) and gap(43) == pytest.approx(ROW_GAP)


@pytest.mark.parametrize("count,columns", [(10, 5), (7, 3), (1, 5), (43, 1), (12, 4)])
def test_an_image_grid_is_the_grid_make_subplots_draws(count, columns):
    """The grid written out as one layout against plotly's own make_subplots with one trace added per image."""
    import html

    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from artlab.plots import GRID_SPACING, ROW_GAP, image_grid

    rng = np.random.default_rng(count)
    images = [None if i % 4 == 3 else rng.integers(0, 255, (8 + i, 9, 3), dtype=np.uint8) for i in range(count)]
    captions = [f"<artwork> {i}" if i % 5 else "" for i in range(count)]
    rows = -(-count // columns)
    height = 170 * rows + 80
    reference = make_subplots(rows=rows, cols=columns, subplot_titles=[html.escape(c) for c in captions],
                              horizontal_spacing=GRID_SPACING, vertical_spacing=ROW_GAP / height)
    for i, pixels in enumerate(images):
        if pixels is not None:
            reference.add_trace(go.Image(z=pixels), row=i // columns + 1, col=i % columns + 1)
    reference.update_xaxes(visible=False).update_yaxes(visible=False).update_annotations(font_size=10)
    reference.update_layout(title="a title", height=height, margin={"l": 10, "r": 10})
    mine, theirs = image_grid(images, captions, "a title", columns).to_plotly_json(), reference.to_plotly_json()

    def plain(value):  # numbers to 12 digits (plotly's domains add up their fractions another way), arrays as lists
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if k != "template"}
        if isinstance(value, (list, tuple, np.ndarray)):
            return [plain(v) for v in value]
        return round(float(value), 12) if isinstance(value, (float, np.floating)) else value

    assert plain(mine["layout"]) == plain(theirs["layout"])
    # each image is a PNG of exactly its pixels, where make_subplots' trace holds the pixels themselves
    assert [_decoded(trace.pop("source")).tolist() for trace in mine["data"]] == [p.tolist() for p in images
                                                                                  if p is not None]
    assert plain(mine["data"]) == [{k: v for k, v in trace.items() if k != "z"} for trace in plain(theirs["data"])]


def _decoded(source: str):
    """The pixels of an image given as a data URI, read back by PIL."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    head, _, data = source.partition(",")
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def test_a_picture_keeps_its_pixels_and_refuses_what_is_not_pixels():
    import numpy as np

    from artlab.plots import picture

    rgba = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)  # transparency kept
    assert np.array_equal(_decoded(picture(rgba).source), rgba)

    with pytest.raises(ValueError, match=r"uint8 pixels, not float64 \(4, 4, 3\)"):
        picture(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match=r"not uint8 \(4, 4\)"):
        picture(np.zeros((4, 4), np.uint8))


# ---- what fine-tuning changed -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def changed(tuned_run):
    """A one-epoch fine-tuned run and its params + CKA analysis on two layers."""
    from artlab.analysis import Comparison, analyze

    analysis = analyze(Comparison(tuned_run.path, what=("params", "cka"), max_images=32,
                                  layers=["features.10", "features.17"]), out_dir=tuned_run.path / "analysis-cka")
    return tuned_run, analysis


def _convs(model: nn.Module, block: str) -> dict[str, nn.Conv2d]:
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and (name == block or name.startswith(block + "."))}


def test_change_explorer(changed):
    from artlab.runs import load_network

    run, analysis = changed
    explorer = ChangeExplorer(analysis)
    assert explorer.layer == "features.18" and explorer.figure_id == "params.per_layer"
    _control(explorer, "figure").value = "cka.matrix"
    assert explorer.view()[0] is analysis.figures["cka.matrix"]
    _control(explorer, "layer").value = "features.17"
    # brute force: sum |W_ft - W_pre| / sum |W_pre| over the block's convolutions, and its number of filters
    before, after = _convs(models.build("mobilenet_v2"), "features.17"), _convs(load_network(run.path), "features.17")
    moved = sum(float((after[n].weight - before[n].weight).abs().sum().detach()) for n in before)
    size = sum(float(before[n].weight.abs().sum().detach()) for n in before)
    facts = explorer.facts()["value"]
    assert facts["relative change of its weights"] == pytest.approx(moved / size, abs=1e-4)
    cka = analysis.tables["cka_matrix"]
    column = cka[cka["layer_b"] == "features.17"]
    assert facts["most similar pretrained layer"].startswith(column.loc[column["cka"].idxmax(), "layer_a"])
    histogram, curve = explorer.layer_figures()
    assert len(histogram.data[0].x) == sum(conv.out_channels for conv in before.values())
    assert list(curve.data[0].y) == pytest.approx(column.sort_values("depth_a")["cka"].tolist())
    assert explorer.computed["layer figures"] == 2
    _control(explorer, "layer").value = "features.4"  # weights analysed, no CKA there: the histogram only
    assert len(explorer.layer_figures()) == 1 and "most similar pretrained layer" not in explorer.facts().index
    _control(explorer, "layer").value = "features.17"
    assert explorer.computed["layer figures"] == 3, "figures already drawn are reused"
    with pytest.raises(KeyError, match="no layer"):
        explorer.select(layer="classifier")
    with pytest.raises(KeyError, match="no figure"):
        explorer.select(figure_id="topk.gallery")


# ---- three strategies ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def strategies(small_synthetic, tmp_path_factory):
    from artlab.experiments import run_strategies

    return run_strategies(data=_manifest(small_synthetic), task="style", epochs=1, image_size=64,
                          runs_dir=tmp_path_factory.mktemp("runs"))


@pytest.mark.slow
def test_strategy_explorer_trains_the_chosen_depth(strategies):
    from artlab.runs import load_network

    explorer = StrategyExplorer(strategies)
    assert list(explorer.table()["strategy"]) == ["off-the-shelf (features.18)", "fine-tune (0 frozen)", "scratch"]
    assert explorer.depth_chart() is None, "one depth: nothing to plot against depth"
    assert _control(explorer, "train and compare").tooltip.startswith("train fine-tune (0 frozen) ")
    _control(explorer, "frozen blocks").value = "18"
    assert _control(explorer, "train and compare").tooltip.startswith("train fine-tune (18 frozen) ")
    _control(explorer, "train and compare").click()
    assert explorer.computed["runs"] == 1
    run = explorer.results["fine-tune (18 frozen)"].run
    assert run.config()["freeze"] == 18 and run.finished
    # the widget really froze 18 blocks: their convolutions still hold the ImageNet weights, the 19th moved
    pretrained, tuned = models.build("mobilenet_v2"), load_network(run.path)
    for block in range(19):
        same = all(torch.equal(a.weight, b.weight) for a, b in zip(_convs(pretrained, f"features.{block}").values(),
                                                                   _convs(tuned, f"features.{block}").values()))
        assert same == (block < 18), f"features.{block}"
    _control(explorer, "train and compare").click()
    assert explorer.computed["runs"] == 1, "a run on the chart is not trained again"
    depth = explorer.depth_chart()
    assert list(depth.data[0].x) == [0, 18]
    assert list(depth.data[0].y) == [strategies.results["fine_tune"].metrics["accuracy"],
                                     explorer.results["fine-tune (18 frozen)"].metrics["accuracy"]]
    _control(explorer, "strategy").value = "off_the_shelf"
    slider = _control(explorer, "layer")
    assert slider.value == "features.18" and explorer.freeze == 18, "switching strategy keeps each choice"
    slider.value = "features.10"
    assert _control(explorer, "train and compare").tooltip.startswith("train off-the-shelf (features.10) "), \
        "the button names the run it trains"
    _control(explorer, "train and compare").click()
    probe = explorer.results["off-the-shelf (features.10)"].run
    assert probe.config()["layer"] == "features.10" and probe.name.endswith("features.10")
    assert list(explorer.table()["strategy"]) == ["off-the-shelf (features.10)", "off-the-shelf (features.18)",
                                                  "fine-tune (0 frozen)", "fine-tune (18 frozen)", "scratch"]
    with pytest.raises(ValueError, match="19 blocks"):
        explorer.select(freeze=20)


@pytest.mark.slow
def test_later_notebooks_reuse_the_fine_tuned_run(strategies, small_synthetic):
    """Notebooks 03 to 06 ask train() for the run notebook 02 made: the same folder, not trained again."""
    from artlab.training import TrainConfig, train

    made = strategies.results["fine_tune"].run
    stamp = made.file("model.safetensors").stat().st_mtime_ns
    again = train(TrainConfig(data=_manifest(small_synthetic), task="style", epochs=1, image_size=64),
                  runs_dir=made.path.parent, resume=True)
    assert again.run.path == made.path and made.file("model.safetensors").stat().st_mtime_ns == stamp
    assert again.metrics == strategies.results["fine_tune"].metrics
