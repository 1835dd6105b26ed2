"""The leak guard of every multi-stage path: a target's validation and test images never train an earlier stage.

A source stage (double fine-tuning, a sweep's source classes) may draw on a collection that holds
some of its target's images: the same files (matched by the whole file's sha1: copies under other
names and folders included, and a workshop pack's shrunk stand-ins as their originals, `artlab.data.standins`) or
the same artworks saved at another size or quality (matched by a perceptual hash,
`data.images.difference_hash`, within LOOK_ALIKE_BITS). Either way the target's
held-out images are left out of the source stage and listed in its skipped.csv with the reason.
An `--init-from` chain whose earlier run trained on the target's held-out files is refused with
the count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from artlab.cache import content_id
from artlab.data.collection import ArtCollection
from artlab.data.standins import originals

HELD_OUT = ("val", "test")
#: Two difference hashes at most this many bits apart are taken for one picture (a 64-bit hash; copies of one
#: artwork at two sizes differ by a few bits, different paintings by about 32).
LOOK_ALIKE_BITS = 6
#: The start of every reason a source stage gives for an image it kept out (skipped.csv).
KEPT = "kept out:"
KEPT_OUT = f"{KEPT} the same file is in the validation or test split of"
KEPT_LOOK_ALIKE = f"{KEPT} it looks like an image (perceptual hash within {LOOK_ALIKE_BITS} bits) in the " \
                  f"validation or test split of"


@dataclass(frozen=True)
class Holdout:
    """A target's held-out images: their content hashes (sha1) and difference hashes, and the target's name."""

    target: str
    sha1: frozenset[str]
    dhash: np.ndarray  # uint64

    @classmethod
    def of(cls, target: ArtCollection) -> Holdout:
        """The validation and test images of a prepared (checked and split) target collection."""
        held = target.table.loc[target.table["split"].isin(HELD_OUT), "path"]
        info = _info(target).reindex(held)
        return cls(target.name, frozenset(info["sha1"].dropna()) | _originals(held), _hashes(info["dhash"]))

    def matching(self, paths: Iterable[str]) -> list[str]:
        """The files among `paths` that hold a held-out image, by content (a stand-in: whose original is one; a file
        already hashed in this process, by its image check, is not read again)."""
        paths = list(paths)
        found = []
        for path, original in zip(paths, originals(paths)):
            try:
                content = content_id(path)
            except OSError:
                continue
            if content in self.sha1 or (original is not None and original.sha1 in self.sha1):
                found.append(path)
        return found

    def identical(self, collection: ArtCollection) -> np.ndarray:
        """Which rows of a checked collection are byte-identical to a held-out image (a workshop pack's stand-in
        counts as its original, `artlab.data.standins`)."""
        paths = collection.table["path"]
        own = _info(collection).reindex(paths)["sha1"].isin(self.sha1).to_numpy()
        return own | np.isin([o.sha1 if o else "" for o in originals(paths)], list(self.sha1))

    def look_alike(self, collection: ArtCollection) -> np.ndarray:
        """Which rows of a checked collection look like a held-out image (within LOOK_ALIKE_BITS of its hash)."""
        column = _info(collection).reindex(collection.table["path"])["dhash"]
        found = column.notna().to_numpy()
        alike = np.zeros(len(column), dtype=bool)
        alike[found] = nearest_bits(_hashes(column[found]), self.dhash) <= LOOK_ALIKE_BITS
        return alike

    def keep_out(self, collection: ArtCollection) -> ArtCollection:
        """`collection` without the held-out images and their look-alikes, listed in its `skipped` with the reason."""
        same = self.identical(collection)
        alike = self.look_alike(collection) & ~same
        if not (same | alike).any():
            return collection
        reasons = np.where(same, f"{KEPT_OUT} {self.target}", f"{KEPT_LOOK_ALIKE} {self.target}")
        gone = pd.DataFrame({"path": collection.table["path"][same | alike], "reason": reasons[same | alike]})
        return replace(collection.subset(~(same | alike)),
                       skipped=pd.concat([collection.skipped, gone], ignore_index=True))


def nearest_bits(hashes: np.ndarray, others: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """For each hash, the fewest bits it differs by from any of `others` (65 when there are none)."""
    best = np.full(len(hashes), 65, dtype=np.int64)
    if not len(others):
        return best
    for start in range(0, len(hashes), chunk):
        block = hashes[start:start + chunk, None] ^ others[None, :]
        best[start:start + chunk] = np.bitwise_count(block).min(axis=1)
    return best


def shares_images(source: ArtCollection, target: ArtCollection) -> bool:
    """Whether two checked collections hold the same file or two images that look alike (by perceptual hash)."""
    mine, theirs = _info(source), _info(target)
    if _contents(source, mine) & _contents(target, theirs):
        return True
    return bool((nearest_bits(_hashes(mine["dhash"]), _hashes(theirs["dhash"])) <= LOOK_ALIKE_BITS).any())


def _originals(paths: Iterable[str]) -> frozenset[str]:
    """The sha1 of the originals of the stand-ins among `paths`."""
    return frozenset(original.sha1 for original in originals(paths) if original is not None)


def _contents(collection: ArtCollection, info: pd.DataFrame) -> set[str]:
    """The sha1 of a checked collection's files, and of the originals of its stand-ins."""
    return set(info["sha1"].dropna()) | _originals(collection.table["path"])


def _info(collection: ArtCollection) -> pd.DataFrame:
    if collection.image_info is None or "dhash" not in collection.image_info:
        raise RuntimeError(f"{collection.name}: check its images first (check_images): the guard matches contents")
    return collection.image_info.drop_duplicates("path").set_index("path")


def _hashes(column: pd.Series) -> np.ndarray:
    """Hex difference hashes as uint64 (missing ones dropped)."""
    return np.array([int(h, 16) for h in column.dropna()], dtype=np.uint64)
