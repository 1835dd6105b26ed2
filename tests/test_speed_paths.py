"""The fast paths compute what the slow ones did: decoded-image cache, inference copies, the one-pass analysis."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from artlab import models
from artlab.data import ImageDataset, loader
from artlab.data.decoded import DecodedImages, decoded_dir, read_pack_index

ROOT = Path(__file__).resolve().parent.parent

SIZE = 48


def _paintings(folder: Path, n: int, size: int = 80) -> list[str]:
    """`n` distinct JPEGs of a few shapes (portrait, landscape, small), written fresh for this test."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        shape = [(size, size + 17), (size + 23, size), (30, 40)][i % 3]
        pixels = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
        path = folder / f"p{i}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(str(path))
    return paths


def _dataset(paths: list[str], size: int = SIZE, **options) -> ImageDataset:
    return ImageDataset(paths, None, size, models.arch("mobilenet_v2").transform(size), keep=False, **options)


def _read_all(dataset: ImageDataset, num_workers: int = 0) -> list[int]:
    """Iterate the dataset as every consumer does (fills the decoded-image cache); the indices seen."""
    seen = []
    for batch in loader(dataset, 5, num_workers=num_workers):
        if batch is not None:
            seen += batch[1].tolist()
    return seen


def _packs(size: int = SIZE) -> list[Path]:
    return sorted(decoded_dir(size).glob("*.safetensors"))


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A decoded-image cache of this test's own (the session cache is shared by other tests)."""
    monkeypatch.setenv("ARTLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ---- the decoded-image cache ---------------------------------------------------------------------------------
def test_cached_images_equal_a_fresh_decode_and_batches_are_unchanged(tmp_path, own_cache):
    paths = _paintings(tmp_path / "img", 11)
    first = _dataset(paths)
    assert first.decoded.missing == 11
    before = [(x.clone(), i) for x, i in (first[j] for j in range(11))]
    assert sorted(_read_all(first)) == list(range(11)) and _packs()
    again = _dataset(paths)
    assert again.decoded.missing == 0
    for index in range(11):
        cached, fresh = again.image(index), again.decode(index)
        assert cached.dtype == torch.uint8 and cached.shape == fresh.shape and min(cached.shape[1:]) <= SIZE
        assert torch.equal(cached, fresh)  # bit for bit
        assert torch.equal(again[index][0], before[index][0])
    assert _dataset(paths, size=SIZE + 8).decoded.missing == 11  # keyed by the working size too
    assert _dataset(paths, cache=False).decoded is None


def test_training_datasets_never_use_the_cache(tmp_path, own_cache):
    paths = _paintings(tmp_path / "img", 4)
    _read_all(_dataset(paths))
    train = ImageDataset(paths, np.zeros(4), SIZE, models.arch("mobilenet_v2").transform(SIZE, train=True), train=True)
    assert train.decoded is None and train.stored_side > SIZE
    assert isinstance(loader(train, 2), torch.utils.data.DataLoader)


def test_a_changed_file_is_decoded_again(tmp_path, own_cache):
    paths = _paintings(tmp_path / "img", 6)
    _read_all(_dataset(paths))
    Image.fromarray(np.full((70, 90, 3), 200, dtype=np.uint8)).save(paths[2])  # new content under the same name
    os.utime(paths[2], ns=(time.time_ns(), time.time_ns() + 10**9))
    again = _dataset(paths)
    assert set(again.decoded.entries) == {0, 1, 3, 4, 5}
    assert torch.equal(again.image(2), again.decode(2)) and int(again.image(2).float().mean()) == 200


def test_a_damaged_pack_is_dropped_and_its_images_decoded_again(tmp_path, own_cache):
    paths = _paintings(tmp_path / "img", 6)
    _read_all(_dataset(paths))
    (pack,) = _packs()
    entries = read_pack_index(pack)
    data = bytearray(pack.read_bytes())
    first = min(entries.values(), key=lambda e: e.offset)
    data[first.offset + 5] ^= 0xFF  # one flipped pixel byte, same size
    pack.write_bytes(bytes(data))
    damaged = _dataset(paths)
    assert damaged.decoded.missing == 0  # the header is fine: the damage shows when the image is read
    for index in range(6):
        assert torch.equal(damaged.image(index), damaged.decode(index))
    assert not pack.exists()  # the damaged pack was removed ...
    _read_all(damaged)
    assert _dataset(paths).decoded.missing == 0  # ... and its images cached again

    (pack,) = _packs()
    pack.write_bytes(pack.read_bytes()[:-100])  # truncated behind artlab's back
    truncated = _dataset(paths)
    assert truncated.decoded.missing == 6 and not pack.exists()
    assert all(torch.equal(truncated.image(i), truncated.decode(i)) for i in range(6))


def test_a_half_written_pack_is_never_read(tmp_path, own_cache, monkeypatch):
    import artlab.data.decoded as decoded

    paths = _paintings(tmp_path / "img", 5)
    real_save = decoded.save_tensors

    def killed(path, tensors, metadata=None):  # the writer dies half-way: only a .part file is left
        from artlab.io import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half a pack")
            raise OSError("No space left on device")

    monkeypatch.setattr(decoded, "save_tensors", killed)
    with pytest.warns(RuntimeWarning, match="could not be written"):
        _read_all(_dataset(paths))
    assert not _packs()
    part = decoded_dir(SIZE) / ".1-abc.safetensors.x1.part"
    part.write_bytes(b"\x10\0\0\0\0\0\0\0{}")  # a part file some other writer is still writing
    assert _dataset(paths).decoded.missing == 5 and part.exists()
    old = time.time() - 2 * decoded.STALE_PART_SECONDS
    os.utime(part, (old, old))
    monkeypatch.setattr(decoded, "save_tensors", real_save)
    _read_all(_dataset(paths))
    assert not part.exists() and _dataset(paths).decoded.missing == 0


def test_the_cache_is_shared_by_subsets_and_written_once(tmp_path, own_cache):
    paths = _paintings(tmp_path / "img", 9)
    _read_all(_dataset(paths[:5]))
    packs = _packs()
    other = _dataset(paths[3:])  # another run or analysis of the same collection
    assert set(other.decoded.entries) == {0, 1}
    _read_all(other)
    assert len(_packs()) == len(packs) + 1 and len(read_pack_index(_packs()[-1])) == 4  # only the new images
    assert DecodedImages(paths, SIZE).missing == 0



def test_running_out_of_file_handles_never_deletes_a_pack(tmp_path, own_cache):
    import resource

    import artlab.data.decoded as decoded

    paths = _paintings(tmp_path / "img", 40, size=20)
    keys = DecodedImages(paths, SIZE).keys
    writer = decoded.PackWriter(SIZE, pack_bytes=1)  # one pack per image: more packs than open files allowed
    for index, path in enumerate(paths):
        writer.add(keys[index], _dataset([path]).decode(0))
    writer.close()
    assert len(_packs()) == 40
    reader = DecodedImages(paths, SIZE)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").is_dir() else 64
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + decoded.MAX_OPEN_PACKS // 2, hard))
    try:  # fewer free file handles than MAX_OPEN_PACKS: some opens fail, which says nothing about the packs
        served = [reader.get(i) is not None for i in range(40)]
        assert len(reader._handles) <= decoded.MAX_OPEN_PACKS
    finally:
        reader.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not all(served)
    assert len(_packs()) == 40  # every pack kept ...
    again = DecodedImages(paths, SIZE)
    assert again.missing == 0 and all(torch.equal(again.get(i), _dataset([p]).decode(0)) for i, p in enumerate(paths))
    assert len(again._handles) <= decoded.MAX_OPEN_PACKS  # ... and a reader keeps only a few of them open
    again.close()

# ---- unreadable images ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_workers", [0, 1])
def test_unreadable_images_are_skipped_and_reported_with_and_without_workers(tmp_path, own_cache, num_workers):
    from artlab.features import extract, unreadable_rows

    paths = _paintings(tmp_path / "img", 7)
    broken = tmp_path / "img" / "broken.jpg"
    broken.write_bytes(Path(paths[0]).read_bytes()[:200])
    gone = str(tmp_path / "img" / "gone.jpg")
    paths = paths[:3] + [str(broken)] + paths[3:] + [gone]
    dataset = _dataset(paths)
    assert sorted(_read_all(dataset, num_workers)) == [0, 1, 2, 4, 5, 6, 7]
    assert set(dataset.failures) == {str(broken), gone}  # reported in this process, even from workers
    assert "corrupt or truncated" in dataset.failures[str(broken)] and "not found" in dataset.failures[gone]
    features = extract(models.build("mobilenet_v2", pretrained=False), paths, ["features.3"], SIZE,
                       torch.device("cpu"), batch_size=4, num_workers=num_workers)["features.3"]
    assert unreadable_rows(features).tolist() == [i in (3, 8) for i in range(9)]
    with pytest.raises(ValueError, match="none of the 2 images could be read"):
        extract(models.build("mobilenet_v2", pretrained=False), [str(broken), gone], ["features.3"], SIZE,
                torch.device("cpu"))


# ---- inference copies: channels_last, folded BatchNorm, inference_mode ----------------------------------------------
def _plain_features(model, paths, layers, size, pool="avg"):
    """The reference: the caller's network as it is, NCHW, under no_grad, on freshly decoded images."""
    from artlab.data.loading import collate_present

    dataset = ImageDataset(paths, None, size, models.input_transform(model, size), keep=False, cache=False)
    out = {layer: [] for layer in layers}
    with torch.no_grad(), models.Taps(model.eval(), layers, pool) as taps:
        for x, _ in torch.utils.data.DataLoader(dataset, batch_size=7, collate_fn=collate_present):
            for layer, value in taps(x.contiguous()).items():
                out[layer].append(value)
    return {layer: torch.cat(values).numpy() for layer, values in out.items()}


def test_fast_features_equal_the_plain_networks(small_synthetic):
    from artlab.features import extract

    paths = small_synthetic.table["path"].tolist()[::6][:16]
    layers = ["features.1", "features.7", "features.18"]
    model = models.build("mobilenet_v2")
    reference = _plain_features(model, paths, layers, 64)
    for _ in range(2):  # decoded images from the files, then from the cache
        fast = extract(model, paths, layers, 64, torch.device("cpu"), batch_size=7)
        for layer in layers:
            scale = np.abs(reference[layer]).max()
            np.testing.assert_allclose(fast[layer], reference[layer], rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18"])
def test_the_inference_copy_folds_batchnorm_and_keeps_names_and_outputs(arch):
    torch.manual_seed(0)
    model = models.build(arch, pretrained=False).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a trained network has
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    kept = models.arch(arch).layers[3]
    copy = models.for_inference(model.train(), "cpu", keep=[kept])
    assert model.training and not copy.training  # the caller's model keeps its mode; the copy is in eval mode
    model.eval()
    assert dict(model.named_modules()).keys() == dict(copy.named_modules()).keys()
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in copy.modules()) < \
        sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the caller's model is untouched
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    with torch.inference_mode():
        got = copy(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    with torch.inference_mode(), models.Taps(model, [kept]) as plain, models.Taps(copy, [kept]) as fast:
        torch.testing.assert_close(fast(x)[kept], plain(x)[kept], rtol=1e-4, atol=1e-5)


def test_a_tapped_convolution_keeps_its_own_output():
    model = models.build("mobilenet_v2", pretrained=False).eval()
    conv = "features.2.conv.0.0"  # a Conv2d followed by its BatchNorm
    copy = models.for_inference(model, "cpu", keep=[conv], channels_last=False)
    assert isinstance(dict(copy.named_modules())["features.2.conv.0.1"], torch.nn.BatchNorm2d)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), models.Taps(model, [conv], "none") as a, models.Taps(copy, [conv], "none") as b:
        torch.testing.assert_close(b(x)[conv], a(x)[conv])


# ---- the one-pass analysis -------------------------------------------------------------------------------------
def _direct_cka(x, y):
    """Biased linear CKA from centred Gram matrices (Kornblith et al.)."""
    x, y = x - x.mean(0), y - y.mean(0)
    cross = np.linalg.norm(x.T @ y) ** 2
    return cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def _brute_top(scores, k):
    n = len(scores)
    return [list(np.lexsort((np.arange(n), -scores[:, c]))[:k]) for c in range(scores.shape[1])]


def test_one_pass_gives_the_brute_force_cka_and_top_k(small_synthetic):
    from artlab.analysis import PassOptions, linear_cka, one_pass, top_images
    from artlab.features import extract

    paths = small_synthetic.table["path"].tolist()[1::5][:20]
    layers = ["features.2", "features.9", "features.16"]
    base = models.build("mobilenet_v2")
    tuned = models.build("mobilenet_v2")
    with torch.no_grad():
        tuned.features[9].conv[1][0].weight.mul_(1.7)
    torch.manual_seed(1)
    random_net = models.build("mobilenet_v2", pretrained=False)
    result = one_pass(base, tuned, paths, layers, k=4, random=random_net,
                      options=PassOptions(image_size=64, batch_size=7))
    feats = {name: extract(net, paths, layers, 64, torch.device("cpu"), batch_size=7)
             for name, net in (("base", base), ("tuned", tuned), ("random", random_net))}
    assert len(result.cka) == 9 and len(result.cka_random) == 3
    feats = {name: {layer: f.astype(np.float64) for layer, f in by_layer.items()} for name, by_layer in feats.items()}
    for row in result.cka.itertuples():
        assert row.cka == pytest.approx(_direct_cka(feats["base"][row.layer_a], feats["tuned"][row.layer_b]), rel=1e-5)
    for row in result.cka_random.itertuples():
        assert row.layer_a == row.layer_b and row.depth_a == row.depth_b
        assert row.cka == pytest.approx(_direct_cka(feats["base"][row.layer_a], feats["random"][row.layer_b]), rel=1e-5)
    unchanged = result.cka.set_index(["layer_a", "layer_b"]).loc[("features.2", "features.2"), "cka"]
    assert unchanged == pytest.approx(1.0)  # the layers before the change are identical
    for name, net in (("base", base), ("tuned", tuned)):
        scores = extract(net, paths, layers, 64, torch.device("cpu"), batch_size=7, pool="relu_avg")
        for layer in layers:
            assert result.tops[name].indices[layer].tolist() == _brute_top(scores[layer], 4)
    # the separate passes the analysis made before agree with the one pass
    separate = linear_cka(base, tuned, paths, layers, cross=True, options=PassOptions(image_size=64, batch_size=7))
    np.testing.assert_allclose(separate["cka_debiased"], result.cka["cka_debiased"], rtol=1e-9)
    alone = top_images(tuned, paths, layers, k=4, image_size=64, batch_size=7)
    assert all(torch.equal(alone.indices[layer], result.tops["tuned"].indices[layer]) for layer in layers)


def test_one_pass_leaves_out_what_is_not_asked(small_synthetic):
    from artlab.analysis import PassOptions, one_pass

    paths = small_synthetic.table["path"].tolist()[:6]
    net, other = models.build("mobilenet_v2", pretrained=False), models.build("mobilenet_v2", pretrained=False)
    small = PassOptions(image_size=48)
    only_topk = one_pass(net, other, paths, ["features.3"], cka=False, k=2, options=small)
    assert only_topk.cka is None and set(only_topk.tops) == {"base", "tuned"}
    only_cka = one_pass(net, other, paths, ["features.3"], k=None, options=small)
    assert only_cka.tops == {} and only_cka.cka_random is None and len(only_cka.cka) == 1
    with pytest.raises(ValueError, match="same module; pass a copy"):
        one_pass(net, net, paths, ["features.3"], k=2, options=small)
    with pytest.raises(ValueError, match="at least 4 images, got 3"):
        one_pass(net, other, paths[:3], ["features.3"], k=2, options=small)



def test_one_pass_top_k_counts_only_the_images_it_could_read(tmp_path, own_cache):
    from artlab.analysis import PassOptions, one_pass
    from artlab.analysis.topk import overlap

    paths = _paintings(tmp_path / "img", 6)
    broken = tmp_path / "img" / "broken.jpg"
    broken.write_bytes(b"not an image")
    net = models.build("mobilenet_v2", pretrained=False)
    same = models.build("mobilenet_v2", pretrained=False)
    same.load_state_dict(net.state_dict())
    result = one_pass(net, same, paths + [str(broken)], ["features.3"], cka=False, k=10,
                      options=PassOptions(image_size=32))
    assert list(result.failures) == [str(broken)]
    top = result.tops["base"]
    assert top.k == 6 == top.indices["features.3"].shape[1]  # 7 paths, 6 readable
    assert (overlap(top, result.tops["tuned"])["overlap_pct"] == 100).all()  # the same network: the same lists

def test_the_comparison_task_must_be_one_of_the_runs(tmp_path):
    from artlab.analysis import Comparison, analyze
    from artlab.training import TrainConfig, train

    folder = tmp_path / "c"
    rows = ["path,style"]
    for i, path in enumerate(_paintings(folder / "img", 24)):
        rows.append(f"{Path(path).relative_to(folder)},s{i % 2}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    run = train(TrainConfig(data=str(folder / "manifest.csv"), task="style", image_size=32, epochs=1, batch_size=8,
                            device="cpu", name="r"), runs_dir=tmp_path / "runs").run
    with pytest.raises(ValueError, match=r"no task 'artist'; its tasks are \['style'\]"):
        analyze(Comparison(run.path, task="artist"))
    result = analyze(Comparison(run.path, task="style", k=3, image_size=32), out_dir=tmp_path / "out")
    assert set(result.tables["topk_entropy"]["model"]) == {"ImageNet", "r"}
    assert result.tables["cka"]["n_images"].eq(24).all()


# ---- reading ahead on a thread ------------------------------------------------------------------------------------
def test_reading_ahead_keeps_order_raises_in_place_and_closes_its_source_when_left_early():
    import threading

    from artlab.data.images import ImageError
    from artlab.data.loading import read_ahead

    made, closed, threads = [], [], set()

    def items(n, fail_at=None):
        try:
            for i in range(n):
                threads.add(threading.current_thread().name)
                if i == fail_at:
                    raise ImageError(f"item{i}", "broken")
                made.append(i)
                yield i
        finally:
            closed.append(n)

    assert list(read_ahead(items(50))) == list(range(50)) and threads == {"artlab-read-ahead"}
    got = []
    with pytest.raises(ImageError, match="item3: broken"):
        for item in read_ahead(items(10, fail_at=3)):
            got.append(item)
    assert got == [0, 1, 2]  # everything before the error reached the caller, in order
    made.clear()
    ahead = read_ahead(items(1000))
    assert [next(ahead) for _ in range(3)] == [0, 1, 2]
    ahead.close()  # the caller stops early: the source is closed and produced only a batch or two beyond
    assert closed[-1] == 1000 and len(made) <= 5
    assert not any(t.name == "artlab-read-ahead" for t in threading.enumerate())


def test_a_process_left_with_a_half_read_loader_exits_cleanly(small_synthetic, tmp_path):
    """A daemon thread killed inside torch at shutdown aborts the process ("terminate called without an active
    exception", status 134): the threads reading ahead are stopped at exit."""
    import subprocess
    import sys

    script = tmp_path / "half.py"
    paths = small_synthetic.table["path"].tolist() * 4
    script.write_text(f"""
from artlab import models
from artlab.data.loading import ImageDataset, loader
model = models.build("mobilenet_v2", pretrained=False)
dataset = ImageDataset({paths!r}, None, 96, models.input_transform(model, 96), keep=False)
batches = iter(loader(dataset, 16, num_workers=0))
next(batches)
print("left half-read", flush=True)
""")
    env = os.environ | {"ARTLAB_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    for _ in range(3):  # the first fills the decoded-image cache; then a batch comes at once and the thread runs on
        done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "left half-read" in done.stdout, (done.returncode, done.stderr[-500:])

