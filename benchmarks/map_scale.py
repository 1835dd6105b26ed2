"""Benchmark: the collection map (PCA and t-SNE, thumbnails on hover) of 1,000, 5,000 and 10,500 paintings.

    python benchmarks/map_scale.py [--sizes 1000 5000 10500] [--no-variants]

The images are a fixed sample (seed 0) of ../shared/data/wikiart_styles (all 10,500 for the largest size),
mapped by the ImageNet MobileNetV2's pooled `features.18` at 128 px. For each size:

  features cold    `layer_features` with nothing cached (a fresh ARTLAB_CACHE: images decoded, both caches filled)
  features cached  the same call again (read from the feature cache)
  projection       `collection_map` (PCA, or t-SNE on 50 principal components)
  figure + write   `map_figure` (its hover thumbnails: one sprite of small tiles) and `write_map_html`
  page             the written page in MB (plotly.min.js, 4.6 MB beside it, is shared by every page of a folder)
  whole map        features + projection + figure + write, cold or cached

With variants (the default), t-SNE of the largest sample is also timed as it ran before issue 20 (scikit-learn
on the 1,280-d vectors, default n_jobs) and with openTSNE (FFT) when it is importable, each map scored by the
10-NN style accuracy of its 2-D points (5-fold), so a faster map is not a worse one. Results go to
benchmarks/results/map-scale.json; the pages (they show the artworks) to a temporary folder, then deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

HERE = Path(__file__).resolve().parent
WIKIART = HERE.parent.parent / "shared" / "data" / "wikiart_styles"
RESULTS = HERE / "results" / "map-scale.json"
SIZES = (1_000, 5_000, 10_500)
METHODS = ("pca", "tsne")


def timed(compute: Callable[[], object]) -> tuple[object, float]:
    """What `compute()` returns and the seconds it took."""
    start = time.perf_counter()
    value = compute()
    return value, round(time.perf_counter() - start, 2)


def sample(table: pd.DataFrame, n: int) -> pd.DataFrame:
    """`n` images of the collection, a fixed random sample (the whole collection when n covers it)."""
    return table if n >= len(table) else table.sample(n=n, random_state=0).reset_index(drop=True)


def map_one_size(table: pd.DataFrame, scratch: Path) -> dict[str, object]:
    """Features (cold, then cached), then the PCA and t-SNE maps written as pages, for one sample."""
    from artlab.interpret import projection

    os.environ["ARTLAB_CACHE"] = str(scratch / f"cache-{len(table)}")  # nothing cached yet
    paths = table["path"].tolist()
    _, cold = timed(lambda: projection.layer_features("imagenet", paths))
    features, cached = timed(lambda: projection.layer_features("imagenet", paths))
    row: dict[str, object] = {"images": len(table), "features_cold_s": cold, "features_cached_s": cached}
    for method in METHODS:
        layout, project_s = timed(lambda m=method: projection.collection_map(table, features, m, "label"))
        page_path = scratch / "pages" / f"map-{len(table)}-{method}.html"

        def figure_and_write(layout=layout, page_path=page_path) -> tuple[object, Path]:
            fig = projection.map_figure(layout, title=f"{len(table)} paintings")
            return fig, projection.write_map_html(fig, page_path)

        (fig, page), write_s = timed(figure_and_write)
        sprite = fig.layout.meta[projection.SPRITE_META]
        row[method] = {"projection_s": project_s, "figure_and_write_s": write_s,
                       "page_mb": round(page.stat().st_size / 1e6, 2), "tile_px": sprite["tile"],
                       "sprite_sheets": len(sprite["sheets"]),
                       "whole_map_cold_s": round(cold + project_s + write_s, 1),
                       "whole_map_cached_s": round(cached + project_s + write_s, 1),
                       "knn10_2d": knn_2d(np.column_stack([layout["x"], layout["y"]]), layout["label"])}
        page.unlink()
    print(json.dumps(row), flush=True)
    return row


def knn_2d(xy: np.ndarray, labels: pd.Series) -> float:
    """10-NN accuracy of the labels from the 2-D map (5-fold): how much of the classes' structure a map keeps."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return round(float(cross_val_score(KNeighborsClassifier(10), xy, labels.to_numpy(), cv=folds).mean()), 3)


def tsne_variants(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """t-SNE of one sample's (cached) features as before issue 20, and by openTSNE when installed."""
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import normalize

    from artlab.interpret import projection

    x = normalize(projection.layer_features("imagenet", table["path"].tolist()).astype(np.float64))
    variants: dict[str, Callable[[], np.ndarray]] = {
        "sklearn, 1280-d, default n_jobs (before)": lambda: TSNE(2, perplexity=30, init="pca",
                                                                 random_state=0).fit_transform(x)}
    try:
        import openTSNE
    except ImportError:
        print("openTSNE is not installed: its variant is left out")
    else:
        from sklearn.decomposition import PCA

        variants[f"openTSNE {openTSNE.__version__}, PCA 50, FFT, n_jobs=-1"] = lambda: np.asarray(openTSNE.TSNE(
            perplexity=30, n_jobs=-1, random_state=0).fit(PCA(50, random_state=0).fit_transform(x)))
    out = {}
    for name, run in variants.items():
        xy, seconds = timed(run)
        out[name] = {"seconds": seconds, "knn10_2d": knn_2d(xy, table["label"])}
        print(name, out[name], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--no-variants", action="store_true", help="leave out the other t-SNE implementations")
    args = parser.parse_args()
    import sklearn
    import torch

    from artlab.data import load

    collection = load(WIKIART).table
    scratch = Path(tempfile.mkdtemp(prefix="artlab-map-scale-"))
    try:
        rows = [map_one_size(sample(collection, n), scratch) for n in args.sizes]
        variants = {} if args.no_variants else tsne_variants(sample(collection, max(args.sizes)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = {"collection": "wikiart_styles", "network": "imagenet mobilenet_v2 features.18, 128 px",
              "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, scikit-learn {sklearn.__version__}, "
                         f"python {platform.python_version()}", "date": time.strftime("%Y-%m-%d"),
              "sizes": rows, "tsne_variants_at_largest_size": variants}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
