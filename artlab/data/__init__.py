"""Art collections: loading, checking, filtering, splitting and the embedded synthetic default."""

from artlab.data.collection import SPLITS, ArtCollection
from artlab.data.images import ImageError, load_rgb, scan
from artlab.data.layouts import (
    LAYOUTS,
    from_folders,
    from_manifest,
    from_peopleart,
    from_wikiart,
    load,
    load_synthetic,
)
from artlab.data.loading import ImageDataset, loader
from artlab.data.summary import CollectionSummary, collection_summary, examples

__all__ = ["LAYOUTS", "SPLITS", "ArtCollection", "CollectionSummary", "ImageDataset", "ImageError",
           "collection_summary", "examples", "from_folders", "from_manifest", "from_peopleart", "from_wikiart", "load",
           "load_rgb", "load_synthetic", "loader", "scan"]
