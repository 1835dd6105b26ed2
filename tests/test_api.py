"""The notebook-sized API: taps, model cards, one config source, single-task defaults, stable figure ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from artlab import models
from artlab.cli import main
from artlab.models import ModelCard, Taps
from artlab.training.config import TrainConfig, default_name


# ---- taps ------------------------------------------------------------------------------------------------
def test_taps_equal_torchvision_feature_extractor_and_stop_early():
    torch.manual_seed(0)
    model = models.build("mobilenet_v2", pretrained=False).eval()
    # imported here, after artlab's torchvision: at the module's top it imported torchvision whole, and with it
    # torch's compiler (1.6 s), in every worker that collects the tests
    from torchvision.models.feature_extraction import create_feature_extractor

    layers = ["features.3", "features.8"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = create_feature_extractor(model, return_nodes=layers)(x)
        fired = []
        later = model.features[12].register_forward_hook(lambda *_: fired.append("features.12"))
        with Taps(model, layers, pool="none") as taps:
            maps = taps(x)
        with Taps(model, layers, pool="avg") as taps:
            pooled = taps(x)
        later.remove()
    for layer in layers:
        assert torch.equal(maps[layer], reference[layer])
        assert torch.allclose(pooled[layer], reference[layer].mean(dim=(2, 3)))
    assert fired == [], "the forward pass must stop after the last wanted layer"
    assert not model.features[3]._forward_hooks, "hooks are removed on exit"


def test_unknown_pooling_and_layer_are_named():
    model = models.build("mobilenet_v2", pretrained=False)
    with pytest.raises(ValueError, match="pooling must be one of"):
        Taps(model, ["features.3"], pool="max-ish")
    with pytest.raises(KeyError, match="features.99"):
        Taps(model, ["features.99"])
    with pytest.raises(KeyError, match="features.18"):  # the error lists the valid analysed layers
        models.check_layers(models.arch("mobilenet_v2"), ["classifier"])


# ---- a model knows what it is ------------------------------------------------------------------------------
def test_built_network_carries_its_architecture():
    model = models.build("resnet18", pretrained=False, num_classes=4)
    assert models.arch_of(model).name == "resnet18"
    assert models.head_module(model).out_features == 4
    assert models.replace_head(model, 9) is model.fc and model.fc.out_features == 9
    with pytest.raises(TypeError, match="artlab.models.build"):
        models.arch_of(torch.nn.Linear(2, 2))


def test_model_card_round_trip_and_old_format():
    card = ModelCard(kind="network", arch="mobilenet_v2", tasks=("style",), classes={"style": ["a|b", "c"]},
                     multi_label={"style": True}, image_size=96, epoch=3)
    assert ModelCard.from_metadata(card.to_metadata()) == card
    assert all(isinstance(v, str) for v in card.to_metadata().values())
    old = {"kind": "linear_probe", "arch": "mobilenet_v2", "layer": "features.14", "task": "style",
           "multi_label": "False", "classes": '["x", "y"]', "image_size": "64"}  # written by artlab 0.1
    parsed = ModelCard.from_metadata(old)
    assert (parsed.task, parsed.task_classes(), parsed.is_multi_label(), parsed.layer) == \
        ("style", ["x", "y"], False, "features.14")


def test_reading_a_card_never_loads_the_tensors(tmp_path, monkeypatch):
    import artlab.io
    from artlab.runs import Run

    run = Run(tmp_path / "r")
    card = ModelCard(kind="network", arch="mobilenet_v2", tasks=("t",), classes={"t": ["a", "b"]},
                     multi_label={"t": False})
    run.save_model({"w": torch.zeros(1000, 1000)}, card)

    def no_tensors(*args, **kwargs):
        raise AssertionError("the weights were read")

    monkeypatch.setattr(artlab.io, "load_tensors", no_tensors)
    assert run.card() == card


# ---- one source of truth for configuration -----------------------------------------------------------------
def test_config_literals_are_checked():
    with pytest.raises(ValueError, match=r"optimizer must be one of \['sgd', 'adam'\]"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="lr must be a finite number"):
        TrainConfig(lr=float("nan"))


def test_cli_options_come_from_the_config_fields(capsys):
    from dataclasses import fields

    from artlab.cli import parser

    train_parser = parser()._subparsers._group_actions[0].choices["train"]
    options = {a.dest: a for a in train_parser._actions}
    for f in fields(TrainConfig):
        assert f.name in options or not f.metadata["cli"], f.name  # keep_out: set by studies, not typed
    assert tuple(options["strategy"].choices) == ("off_the_shelf", "fine_tune", "scratch")
    assert options["image_size"].type is int and options["top_n"].type is int and options["lr"].type is float
    with pytest.raises(SystemExit):
        main(["train", "--optimizer", "rmsprop"])
    assert "invalid choice: 'rmsprop'" in capsys.readouterr().err


def test_default_names():
    base = TrainConfig(data="/x/wikiart", task="style", strategy="fine_tune")
    assert default_name(base) == "wikiart-style-fine_tune-mobilenet_v2-128px"
    assert default_name(TrainConfig(data="/x/wikiart", task="style", freeze=5, seed=2)) == \
        "wikiart-style-fine_tune-mobilenet_v2-128px-freeze5-views4-seed2"  # 4 cached augmented views
    assert default_name(TrainConfig(data="/x/wikiart", task="style", freeze=5, augment_views=0)) == \
        "wikiart-style-fine_tune-mobilenet_v2-128px-freeze5"  # a new crop at every step, as before views
    assert default_name(TrainConfig(data="/x/wikiart", task="style", freeze=5, augment=False)) == \
        "wikiart-style-fine_tune-mobilenet_v2-128px-freeze5-noaug"


def _folder_collection(root: Path) -> str:
    for split, count in (("train", 6), ("val", 2), ("test", 2)):
        for label, colour in (("cats", (200, 40, 40)), ("dogs", (40, 40, 200))):
            for i in range(count):
                (root / split / label).mkdir(parents=True, exist_ok=True)
                image = Image.new("RGB", (40, 40), colour)
                image.putpixel((i, len(split)), (i, i, i))  # each file differs from the others
                image.save(root / split / label / f"{i}.png")
    return str(root)


def test_a_single_task_collection_trains_without_naming_its_task(tmp_path, capsys):
    data = _folder_collection(tmp_path / "pets")
    assert main(["train", "--data", data, "--strategy", "off_the_shelf", "--image-size", "32",
                 "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "accuracy" in capsys.readouterr().out
    run = tmp_path / "runs" / "pets-label-off_the_shelf-mobilenet_v2-32px"
    assert (run / "metrics.json").is_file()
    from artlab.runs import Run

    assert Run(run).config()["task"] == "label" and Run(run).card().task == "label"


# ---- analyses: caller's random state, stable figure ids ------------------------------------------------------
def test_random_baseline_leaves_the_callers_random_state_alone():
    from artlab.runs import RANDOM, Network

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = Network.of(RANDOM, "mobilenet_v2").build()
    assert torch.equal(torch.rand(3), expected)
    second = Network.of(RANDOM, "mobilenet_v2").build()
    assert torch.equal(first.features[0][0].weight, second.features[0][0].weight)  # the baseline is reproducible


def test_an_off_the_shelf_run_on_cached_features_never_imports_torchvision(small_synthetic, tmp_path):
    """torchvision and its transforms take 0.3 s to import (1.5 s with torch's compiler, see the next test): a run
    that reads its features from the cache neither builds a network nor transforms an image, so it goes without."""
    import subprocess
    import sys

    from artlab.training import TrainConfig, train

    manifest = str(small_synthetic.root / "manifest.csv")
    options = dict(data=manifest, task="style", strategy="off_the_shelf", image_size=32, device="cpu")
    train(TrainConfig(**options, name="first"), runs_dir=tmp_path)  # features into the session's cache
    code = ("import sys\nfrom artlab.cli import main\n"
            f"main(['train', '--data', {manifest!r}, '--task', 'style', '--strategy', 'off_the_shelf', "
            f"'--image-size', '32', '--device', 'cpu', '--name', 'again', '--runs-dir', {str(tmp_path)!r}])\n"
            "print('torchvision' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "False", done.stdout[-500:] + \
        done.stderr[-500:]
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["accuracy"] == \
        json.loads((tmp_path / "first" / "metrics.json").read_text())["accuracy"]


def test_networks_and_transforms_leave_torchs_compiler_unloaded_and_intact():
    """Importing torchvision loads torch's compiler (1.2 s of a kernel's 3 s start) for code artlab never runs: a
    process that builds a network and transforms and classifies an image goes without it, and what torchvision took
    from the compiler works afterwards as torch's own (RoI-align, `tv_tensors.wrap`, `torch.compile`)."""
    import subprocess
    import sys

    code = """import sys, torch
from artlab.models import build, input_transform
model = build("mobilenet_v2", pretrained=False).eval()
image = torch.randint(0, 256, (3, 80, 80), dtype=torch.uint8)
x = torch.stack([input_transform(model, 64, train=True)(image), input_transform(model, 64)(image)])
assert model(x).shape == (2, 1000)
print("compiler loaded:", "torch._dynamo" in sys.modules)
from artlab.models.vision import compiler_deferred
with compiler_deferred():  # a deferred function called while they are swapped: torch's own applies, once
    assert torch.compiler.disable(lambda a: a + 1)(1) == 2
from torchvision import tv_tensors
from torchvision.ops import roi_align
from torchvision.transforms import v2
assert type(v2.RandomHorizontalFlip(p=1)(tv_tensors.Image(torch.rand(3, 8, 8)))) is tv_tensors.Image
assert roi_align(torch.rand(1, 2, 8, 8), torch.tensor([[0, 0.0, 0.0, 4.0, 4.0]]), output_size=2).shape == (1, 2, 2, 2)
import torch._dynamo.utils
assert torch.compiler.disable.__module__ == "torch.compiler" and torch._dynamo.utils.__file__  # the real ones
taken = sys.modules["torchvision.ops.roi_align"].is_compile_supported  # what RoI-align took: answers as the real
assert taken is not torch._dynamo.utils.is_compile_supported
assert [taken(d) for d in ("cpu", "cuda", "meta")] == [torch._dynamo.utils.is_compile_supported(d) for d in
                                                      ("cpu", "cuda", "meta")]
assert torch.compile(lambda a: a * 2, backend="eager")(torch.ones(2)).tolist() == [2.0, 2.0]
print("compiler works")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines() == ["compiler loaded: False", "compiler works"], done.stdout[-500:] + \
        done.stderr[-1000:]


def test_training_and_rendering_leave_torchs_compiler_unloaded_and_step_as_torchs_optimisers(small_synthetic,
                                                                                           tmp_path):
    """torch's optimisers import its compiler (1.3 s) when first built and stepped: a process that fine-tunes,
    trains a linear head on features and renders a channel goes without it, and artlab's SGD and Adam move the
    weights exactly as torch's do (a closure, a learning-rate schedule, a state saved and loaded, the step hooks
    once a step, the grad mode as it was), before the compiler is loaded and after, also when built after
    torch's own (whose step then carries its hooks)."""
    import subprocess
    import sys

    manifest = str(small_synthetic.root / "manifest.csv")
    code = f"""import copy, importlib, sys, warnings, torch
from artlab.cli import main
for strategy in ("fine_tune", "off_the_shelf"):
    assert main(["train", "--data", {manifest!r}, "--task", "style", "--strategy", strategy, "--epochs", "1",
                 "--classifier", "linear", "--image-size", "32", "--device", "cpu", "--name", strategy,
                 "--runs-dir", {str(tmp_path)!r}]) == 0
from artlab.interpret.featurevis import RenderSettings, channel, optimise
from artlab.models import build
optimise(build("mobilenet_v2", pretrained=False), channel("features.2", 0), 1, RenderSettings(steps=2, size=16))
print("compiler loaded:", "torch._dynamo" in sys.modules)
import artlab.models.optim as optim
warnings.simplefilter("error")  # a schedule stepped out of order warns
torch.manual_seed(0)
start = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))

def built(optimizer, model, calls, **options):
    opt = optimizer([{{"params": model[0].parameters(), "lr": 0.01}}, {{"params": model[2].parameters()}}], lr=0.1,
                    weight_decay=1e-4, **options)
    opt.register_step_pre_hook(lambda *_: calls.append("pre"))
    opt.register_step_post_hook(lambda *_: calls.append("post"))
    return opt

def loss(model):
    return torch.nn.functional.cross_entropy(model(x), y)

def trained(optimizer, **options):
    model, calls = copy.deepcopy(start), []
    opt = built(optimizer, model, calls, **options)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3)
    def closure():
        opt.zero_grad()
        value = loss(model)
        value.backward()
        return value

    for step in range(3):
        opt.zero_grad()
        if step == 0:
            loss(model).backward()
            opt.step()
            assert torch.is_grad_enabled()
        elif step == 1:
            assert isinstance(opt.step(closure), torch.Tensor)
        else:
            loss(model).backward()
            with torch.no_grad():
                opt.step()
                assert not torch.is_grad_enabled()
        schedule.step()
    assert calls == ["pre", "post"] * 3, calls
    again, later = copy.deepcopy(model), []  # the state saved and loaded steps on as the optimiser itself does
    loaded = built(optimizer, again, later, **options)
    loaded.load_state_dict(copy.deepcopy(opt.state_dict()))
    for each, net in ((opt, model), (loaded, again)):
        each.zero_grad()
        loss(net).backward()
        each.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters())) and later == ["pre", "post"]
    return [p.detach().clone() for p in model.parameters()]

ours = [trained(optim.SGD, momentum=0.9), trained(optim.Adam)]
assert "torch._dynamo" not in sys.modules
torchs = [trained(torch.optim.SGD, momentum=0.9), trained(torch.optim.Adam)]
assert "torch._dynamo" in sys.modules
after = [trained(optim.SGD, momentum=0.9), trained(optim.Adam)]
optim = importlib.reload(optim)  # built anew over torch's classes, whose step now carries the hooks
rebuilt = [trained(optim.SGD, momentum=0.9), trained(optim.Adam)]
for mine in (ours, after, rebuilt):
    assert all(torch.equal(a, b) for m, t in zip(mine, torchs) for a, b in zip(m, t))
print("steps as torch's")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.stdout.splitlines()[-2:] == ["compiler loaded: False", "steps as torch's"], done.stdout[-500:] + \
        done.stderr[-1500:]


def test_only_torchs_own_wrappers_are_taken_off_its_optimiser_methods():
    """artlab's optimisers bypass the wrappers torch 2.14 puts over its methods; a wrapper it does not know (another
    torch) is kept: the method is then torch's own."""
    import functools

    import torch

    from artlab.models.optim import SGD, _without_compiler, bare

    assert bare(torch.optim.SGD.step).__code__.co_filename.endswith("sgd.py")
    assert bare(torch.optim.Optimizer.zero_grad).__qualname__ == "Optimizer.zero_grad"
    assert bare(torch.optim.Optimizer.zero_grad) is not torch.optim.Optimizer.zero_grad  # under torch's mark
    unknown = functools.wraps(torch.optim.SGD.step)(lambda self, closure=None: "another torch's step")
    assert bare(unknown) is None

    class Another(torch.optim.SGD):  # a step under a wrapper this torch does not have: left as it is
        step = unknown

    assert _without_compiler(Another).step is unknown and _without_compiler(torch.optim.SGD).step is not unknown
    assert SGD.step is not torch.optim.SGD.step and SGD.__doc__ == torch.optim.SGD.__doc__


def test_pytest_processes_import_jsonschema_without_compiling_the_iri_grammars():
    """nbval's plugin imports nbformat, hence jsonschema, in every pytest process: artlab's plugin (pyproject's
    `-p artlab.tools.pytest_plugin`) imports it first, artlab's way, so the grammars' parser (lark) is not loaded."""
    import sys

    assert "jsonschema" in sys.modules and "nbval.plugin" in sys.modules
    assert "lark" not in sys.modules and "artlab.tools.pytest_plugin" in sys.modules


def test_showing_a_figure_leaves_the_iri_grammars_uncompiled_and_iris_checked_as_before():
    """plotly's notebook renderer imports nbformat, hence jsonschema, whose optional IRI checker compiles 39 grammars
    on import (1 s of every kernel that shows a figure): after artlab's plots it is not imported, and IRIs are
    checked as this test process checks them (its jsonschema imported the usual way, by nbval)."""
    import subprocess
    import sys

    import jsonschema

    iris = ["https://example.org/peinture-é", "not an iri ::", "http://[::1"]
    code = ("import sys\nimport artlab.plots\nimport plotly.graph_objects as go\n"
            "go.Figure(go.Bar(x=['a'], y=[1]))._repr_mimebundle_({}, {})\n"
            "print('grammars compiled:', 'rfc3987_syntax' in sys.modules)\nimport jsonschema\n"
            "iri = jsonschema.Draft7Validator({'format': 'iri'},\n"
            "                                 format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)\n"
            f"print([iri.is_valid(x) for x in {iris!r}], 'rfc3987_syntax' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    iri = jsonschema.Draft7Validator({"format": "iri"}, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    expected = [iri.is_valid(x) for x in iris]
    assert expected == [True, False, False]
    assert done.stdout.splitlines() == ["grammars compiled: False", f"{expected} True"], done.stdout + done.stderr


def test_a_stand_in_for_a_module_that_is_not_installed_leaves_it_missing():
    import importlib

    from artlab.lazy import stand_in

    with stand_in("artlab_no_such_module", "f"), pytest.raises(ImportError):
        importlib.import_module("artlab_no_such_module")


#: A reference cycle made and dropped in a fresh process; its weak reference says whether it was collected.
_CYCLE = ("class Node:\n    pass\n\ndef dropped_cycle():\n    a, b = Node(), Node()\n    a.b, b.a = b, a\n"
          "    return weakref.ref(a)\n\n")
#: A reference cycle alive until the process exits, whose finaliser prints "finalised" (os.write kept as a default:
#: at exit the module's globals may be gone).
_ALIVE_AT_EXIT = ("import os\nclass Last:\n    def __del__(self, write=os.write):\n        write(1, b'finalised\\n')\n"
                  "last = Last()\nlast.me = last\n")


def test_opening_artlab_imports_neither_scikit_learn_nor_captum_and_its_modules_leave_collections():
    """A notebook's imports (training, probes, metrics, attributions, explorers) leave scikit-learn and Captum for
    the first metric, probe or map: a notebook showing finished runs starts without them. The first use that loads
    torch leaves what is loaded (230,000 objects that live as long as the process) out of later garbage collections
    (`gc.freeze`), once: garbage made before it is collected first, and what is made after it is collected as
    before, also when a later use loads more modules (the explorers)."""
    import subprocess
    import sys

    code = ("import gc, sys, weakref\nimport artlab\n" + _CYCLE + "gc.disable()\nbefore = dropped_cycle()\n"
            "from artlab import Comparison, TrainConfig, analyze, train\n"
            "frozen = gc.get_freeze_count()\nafter = dropped_cycle()\n"
            "held = Node()\nheld.me = held\nheld_then = weakref.ref(held)\nloaded = len(sys.modules)\n"
            "from artlab import topk_browser\ndel held\n"  # alive while the explorers load, dropped after
            "import artlab.training.probe, artlab.training.metrics, artlab.interpret.attribution, artlab.widgets\n"
            "from artlab.widgets import ArtworkInspector, ChannelExplorer, StrategyExplorer\n"
            "later = dropped_cycle()\ngc.collect()\ngc.enable()\n"
            "print(frozen > 100_000, len(sys.modules) > loaded, before() is None, after() is None,"
            " held_then() is None, later() is None)\n"
            "print(sorted(m for m in ('sklearn', 'captum') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-2:] == ["True True True True True True", "[]"], \
        done.stdout[-500:] + done.stderr[-500:]


def test_the_first_use_that_loads_torch_makes_one_collection_pass_not_one_per_few_thousand_objects():
    """artlab's API imports torch, pandas and the rest with the collector paused (`artlab.lazy.collector_paused`):
    the one full collection is `settle_imports`' (a plain `import torch` makes two or more). The collector is on
    again after, and stays off in a process that had turned it off."""
    import subprocess
    import sys

    count = ("import gc\nfull = []\ngc.callbacks.append(lambda phase, info: full.append(1) if phase == 'stop' and "
             "info['generation'] == 2 else None)\n")
    use = "from artlab import train\nprint(len(full), gc.isenabled())\n"
    answers = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
               for code in (count + use, count + "gc.disable()\n" + use, count + "import torch\nprint(len(full))\n")]
    paused, off, plain = (done.stdout for done in answers)
    assert (paused, off) == ("1 True\n", "1 False\n") and int(plain) >= 2, [done.stderr[-300:] for done in answers]


def test_a_command_leaves_what_is_alive_at_exit_to_the_system(tmp_path):
    """A command (here one that fails: nothing to pack) registers `gc.freeze` as an exit handler: the collector's
    last passes skip what is alive at exit, so a reference cycle alive then is not finalised, as a plain process
    finalises it; nothing is frozen before the exit (what the command makes is collected as usual)."""
    import subprocess
    import sys

    cycle = "import gc\n" + _ALIVE_AT_EXIT
    command = (f"from artlab.cli import main\nprint(main(['pack', {str(tmp_path / 'x.zip')!r}, '--runs-dir', "
               f"{str(tmp_path)!r}]), 'frozen', gc.get_freeze_count(), flush=True)\n")
    plain, artlab = (subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
                     for code in (cycle, cycle + command))
    assert plain.stdout == "finalised\n", plain.stderr[-500:]
    assert artlab.stdout == "2 frozen 0\n" and "no finished run to pack" in artlab.stderr, artlab.stderr[-500:]


def test_the_command_line_parses_without_torch_pandas_or_scikit_learn():
    """`artlab --help` and a mistyped option answer at once: nothing heavy is imported before a command runs."""
    import subprocess
    import sys

    code = ("import sys\nfrom artlab.cli import main\nfor argv in (['--help'], ['train', '--epochs', 'x'], "
            "['eval']):\n    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'pandas', 'sklearn', 'numpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-500:] + done.stderr[-500:]
    assert "argument --epochs: invalid int value: 'x'" in done.stderr
