"""Art collections: loading, checking, filtering, splitting and the embedded synthetic default."""

from artlab.data.collection import ArtCollection, from_folders, from_manifest, from_peopleart, from_wikiart, load
from artlab.data.images import ImageError, load_rgb, scan
from artlab.data.synthetic import load_synthetic

__all__ = ["ArtCollection", "ImageError", "from_folders", "from_manifest", "from_peopleart", "from_wikiart",
           "load", "load_rgb", "load_synthetic", "scan"]
