"""Workshop packs: prepare once, explore anywhere.

A teacher packs finished runs, with their analyses (inside the run folders), the caches the notebooks
read (features, renders, maps; less the features of runs not packed) and optionally the images they
used, into one zip; attendees unpack it
and the notebooks show the prepared results without training or a forward pass.

    artlab pack workshop.zip --images            # every finished run under runs/
    artlab pack workshop.zip --images --image-size 512   # images larger than 512 px as stand-ins
    artlab unpack workshop.zip                   # ./runs, ./data and the cache; says what to export

Inside the zip: `pack.json` (artlab version, format, runs, collections), `runs/<name>/...`,
`cache/<kind>/...` and `data/<collection>/...` (images at their recorded paths, relative to the
collection's folder; with `image_size`, the larger ones shrunk, beside a links file that makes each
answer to its original, so the teacher's results are served for it: `artlab.data.standins`). Nothing is
unpickled, members are extracted only under their destination, an existing file is never replaced by
a different one, and a pack from a newer artlab is refused.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from artlab.cache import cache_dir, content_id, file_digest, file_signature
from artlab.data.standins import LINKS_FILE, Original, merged_links, originals, shrink, write_links
from artlab.io import atomic_path, read_metadata
from artlab.progress import progress
from artlab.runs.folder import LOCK_FILE, MODEL_FILE, Run, runs_root
from artlab.runs.split import locate, recorded_root
from artlab.version import __version__

PACK_FILE = "pack.json"
#: The layout of a pack; a pack of a later format is refused by this artlab.
PACK_FORMAT = 1
#: Cache folders that hold results the notebooks show (decoded images, frozen-block outputs and scans are recomputed
#: cheaply, or are specific to the machine that made them).
PACKED_CACHES = ("features", "analyses", "renders", "attributions", "maps")
#: Members stored as they are (already compressed, or binary tensors that deflate little).
STORED_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".safetensors", ".zip"}


#: The smallest `image_size` a pack takes (smaller stand-ins would show the artworks as a few blots).
MIN_IMAGE_SIZE = 32


class PackError(ValueError):
    """A pack that cannot be unpacked here (another artlab, a damaged or unsafe archive)."""


@dataclass
class Pack:
    """What a pack holds (its pack.json): the artlab that made it, its runs and its collections."""

    artlab: str
    runs: list[str]
    collections: dict[str, dict] = field(default_factory=dict)  # folder name -> {"root", "images", "packed",
    #  and with images "image_size", "shrunk" (now) and "stand_ins" (linked, those of an earlier pack included)}
    caches: list[str] = field(default_factory=list)
    format: int = PACK_FORMAT

    def check_compatible(self, source: str | Path) -> None:
        """Refuse a pack this artlab cannot read: a later pack format, or another major version of artlab."""
        if self.format > PACK_FORMAT or _major(self.artlab) != _major(__version__) or \
                _version(self.artlab) > _version(__version__):
            raise PackError(f"{source} was packed by artlab {self.artlab} (pack format {self.format}); this is "
                            f"artlab {__version__} (format {PACK_FORMAT}): install artlab {self.artlab} to unpack it")


def pack(out: str | Path, runs: list[str | Path] | None = None, runs_dir: str | Path | None = None,
         images: bool = False, caches: tuple[str, ...] = PACKED_CACHES, image_size: int | None = None) -> Path:
    """Write one zip holding `runs` (names or folders; default every finished run under `runs_dir`), the cache
    folders `caches` (less the features computed with other runs' networks), and with `images` the image files
    the runs used; with `image_size` (images implied), those larger as stand-ins at most `image_size` pixels on
    their longer side, linked to their originals (`artlab.data.standins`). Returns the zip's path."""
    if image_size is not None and image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size={image_size}: give at least {MIN_IMAGE_SIZE} pixels")
    images = images or image_size is not None
    chosen = [_run(r, runs_dir) for r in runs] if runs else _finished(runs_dir)
    if not chosen:
        raise ValueError(f"no finished run to pack under {runs_root(runs_dir)}")
    unfinished = [run.name for run in chosen if not run.finished]
    if unfinished:
        raise ValueError(f"runs not finished (no metrics.json): {unfinished}; finish them (--resume) or leave them out")
    collections: dict[str, dict] = {}
    members: dict[str, Path] = {}
    left_out: set[str] = set()
    for run in chosen:
        for path in sorted(p for p in run.path.rglob("*") if p.is_file() and not p.name.startswith(".")
                           and p.name != LOCK_FILE):
            members[f"runs/{run.name}/{path.relative_to(run.path).as_posix()}"] = path
        data = str(run.config().get("data"))
        root = recorded_root(run.path, data)
        if root is None or data == "synthetic":  # the synthetic collection is made anew where it is needed
            continue
        entry = collections.setdefault(root.name, {"root": str(root), "images": 0})
        if entry["root"] != str(root):
            raise ValueError(f"two collections named {root.name!r} ({entry['root']} and {root}): rename one folder")
        if images:
            manifest = [data] if Path(data).is_file() else []  # a manifest collection travels with its table
            here = locate(root, data_then=data)  # where the images are now
            for path in [*run.split_table()["path"], *manifest]:
                path = Path(path).absolute()
                if path.is_file() and path.is_relative_to(here):
                    members[f"data/{root.name}/{path.relative_to(here).as_posix()}"] = path
                else:
                    left_out.add(str(path))
    networks = _networks(chosen)
    for kind in caches:
        folder = cache_dir() / kind
        for path in sorted(folder.rglob("*") if folder.is_dir() else []):
            if path.is_file() and not path.name.startswith(".") and _serves(path, networks):
                members[f"cache/{kind}/{path.relative_to(folder).as_posix()}"] = path
    for name in collections:
        collections[name]["images"] = sum(m.startswith(f"data/{name}/") for m in members)
        collections[name]["packed"] = images
    if left_out:
        warnings.warn(f"{len(left_out)} image(s) of the runs are not packed (missing, or outside their collection's "
                      f"folder, e.g. {sorted(left_out)[0]}): attendees need them where ARTLAB_DATA points",
                      stacklevel=2)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="artlab-pack-") as shrunk:
        for name in collections if images else ():
            links, now = _stand_in(members, name, Path(shrunk), image_size)
            collections[name] |= {"image_size": image_size, "shrunk": now, "stand_ins": len(links)}
        manifest = Pack(__version__, [run.name for run in chosen], collections, list(caches))
        with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
            archive.writestr(PACK_FILE, json.dumps(manifest.__dict__, indent=2))
            for name, path in members.items():
                stored = path.suffix.lower() in STORED_SUFFIXES
                archive.write(path, name, zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
    return out


def _stand_in(members: dict[str, Path], collection: str, to: Path,
              image_size: int | None) -> tuple[dict[str, Original], int]:
    """Replace the members of `collection` larger than `image_size` (None: none) by stand-ins written under `to`,
    and add the links file (`standins.LINKS_FILE`) of every stand-in packed as a member: the new ones, and those
    already stand-ins here (a pack made from an unpacked one), linked to their first originals. The links, by path
    relative to the collection's folder, and how many images were shrunk now."""
    prefix, links, shrunk = f"data/{collection}/", {}, 0
    names = [name for name in members if name.startswith(prefix)]
    earlier = dict(zip(names, originals(members[name] for name in names)))
    shrinking = progress(names, desc=f"shrinking {collection}'s images to {image_size} px", unit="image",
                         disable=image_size is None)
    for name in shrinking:
        source, target = members[name], to / name
        if image_size is not None and shrink(source, target, image_size):
            first = earlier[name] or Original(content_id(source), file_signature(source), "")
            links[name.removeprefix(prefix)] = replace(first, standin_sha1=file_digest(target, "sha1"))
            members[name] = target
            shrunk += 1
        elif earlier[name] is not None:
            links[name.removeprefix(prefix)] = earlier[name]
    if links:
        members[f"{prefix}{LINKS_FILE}"] = write_links(to / prefix / LINKS_FILE, links)
    return links, shrunk


def read_pack(source: str | Path) -> Pack:
    """A pack's pack.json, checked against this artlab."""
    try:
        with zipfile.ZipFile(source) as archive:
            manifest = Pack(**json.loads(archive.read(PACK_FILE)))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, TypeError) as exc:
        raise PackError(f"{source} is not an artlab pack or is damaged ({exc})") from None
    manifest.check_compatible(source)
    return manifest


@dataclass
class Unpacked:
    """Where a pack went: its runs folder, its collections' folder, and how many files were new."""

    runs_dir: Path
    data_dir: Path
    pack: Pack
    written: int
    kept: int

    def __str__(self) -> str:
        return (f"{len(self.pack.runs)} run(s) in {self.runs_dir}, {len(self.pack.collections)} collection(s) "
                f"looked for in {self.data_dir}; {self.written} file(s) written, {self.kept} already here")


def unpack(source: str | Path, to: str | Path = ".", runs_dir: str | Path | None = None) -> Unpacked:
    """Extract a pack under `to`: runs to `runs_dir` (default `to`/runs), images to `to`/data/<collection>, caches
    into this machine's cache. Nothing is replaced: a file already there must be identical, else PackError (a
    collection's links file takes the links of both, unless they disagree)."""
    manifest = read_pack(source)
    to = Path(to)
    runs_dir, data_dir = Path(runs_dir) if runs_dir is not None else to / "runs", to / "data"
    places = {"runs": runs_dir, "data": data_dir, "cache": cache_dir()}
    written = kept = 0
    with zipfile.ZipFile(source) as archive:
        targets = [(info, _destination(info.filename, places, source)) for info in archive.infolist()
                   if info.filename != PACK_FILE and not info.is_dir()]
        linked = {target: info for info, target in targets if target.name == LINKS_FILE and target.is_file()
                  and not _same(archive, info, target)}  # two packs of one collection: their links together
        clashes = [str(target) for info, target in targets if target.is_file() and not info.filename.startswith(
            "cache/") and target not in linked and not _same(archive, info, target)]  # cache entries: checked on read
        if clashes:
            raise PackError(f"{len(clashes)} file(s) of {source} differ from those already here (e.g. {clashes[0]}); "
                            f"nothing was unpacked: unpack elsewhere (--to) or move them away")
        try:
            merged = {target: merged_links(target, archive.read(info)) for target, info in linked.items()}
        except ValueError as exc:
            raise PackError(f"{source} cannot be unpacked here: {exc}; nothing was unpacked: unpack elsewhere (--to)") \
                from None
        for info, target in targets:
            if target in merged:
                write_links(target, merged[target])
                written += 1
                continue
            if target.is_file():
                kept += 1
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp, archive.open(info) as member, open(tmp, "wb") as out:
                shutil.copyfileobj(member, out)
            written += 1
    return Unpacked(runs_dir, data_dir, manifest, written, kept)


def _destination(name: str, places: dict[str, Path], source: str | Path) -> Path:
    """Where a member goes: under its place's folder, never outside it (absolute names and `..` refused)."""
    top, _, rest = name.partition("/")
    parts = Path(rest).parts
    if top not in places or not rest or Path(rest).is_absolute() or ".." in parts or name.startswith("/"):
        raise PackError(f"{source}: member {name!r} is not where a pack keeps files; the pack is damaged or unsafe")
    return places[top].joinpath(*parts)


def _same(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> bool:
    if target.stat().st_size != info.file_size:
        return False
    with archive.open(info) as member, open(target, "rb") as here:
        return member.read() == here.read()


def _networks(runs: list[Run]) -> set[str]:
    """The weights ids of the runs' networks and of the earlier stages they started from (whose features an
    off-the-shelf run on a fine-tuned network reads)."""
    ids = set()
    for run in runs:
        ids.add(run.weights_id())
        started, earlier = run.started_from(), run.config().get("init_from")
        if started:
            ids.add(started)
        elif earlier and Run(earlier).file(MODEL_FILE).is_file():  # a run recorded before `started_from`
            ids.add(Run(earlier).weights_id())
    return ids


def _serves(entry: Path, networks: set[str]) -> bool:
    """Whether a cache entry belongs in a pack of runs with these `networks`: one computed with another run's
    network (its metadata names that run's weights: features) is left out; ImageNet's, and entries that name
    no run (renders name a digest of the model in hand, the other kinds nothing), go in. A damaged entry is
    left out (it would be computed again anyway)."""
    if entry.suffix != ".safetensors":
        return True
    try:
        weights = read_metadata(entry).get("weights", "")
    except (OSError, ValueError):
        return False
    return not weights.startswith("run:") or weights in networks


def _run(run: str | Path, runs_dir: str | Path | None) -> Run:
    path = Path(run)
    return Run(path) if path.is_dir() else Run.named(str(run), runs_dir)


def _finished(runs_dir: str | Path | None) -> list[Run]:
    root = runs_root(runs_dir)
    return [Run(p) for p in sorted(root.iterdir()) if Run(p).finished] if root.is_dir() else []


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in text.split(".")[:3])


def _major(text: str) -> int:
    return _version(text)[0]
