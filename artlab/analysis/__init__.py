"""Understanding what fine-tuning changed (Gonthier, Gousseau and Ladjal 2020): parameters, CKA, top-k images."""

from artlab.analysis.cka import cka_of_features, linear_cka
from artlab.analysis.compare import ANALYSES, Analysis, Comparison, Findings, analyze, register, several
from artlab.analysis.distance import CollectionDistance, collection_distance, frechet_distance
from artlab.analysis.onepass import OnePass, one_pass
from artlab.analysis.options import CkaOptions, PassOptions
from artlab.analysis.params import block_changes, filter_changes, layer_changes, most_changed
from artlab.analysis.topk import TopK, class_entropy, dead_kernels, overlap, top_images

__all__ = ["ANALYSES", "Analysis", "CkaOptions", "CollectionDistance", "Comparison", "Findings", "TopK", "analyze",
           "block_changes", "cka_of_features", "class_entropy", "collection_distance", "dead_kernels",
           "filter_changes", "frechet_distance", "layer_changes", "linear_cka", "most_changed", "overlap", "register",
           "several", "top_images", "OnePass", "PassOptions", "one_pass"]
