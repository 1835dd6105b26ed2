"""Seeing inside a network: feature visualisation, attributions (Captum) and a map of the collection.

Each works on any network built by `artlab.models.build` (or a run's, via `artlab.runs.load_network`)
and never imports training or the analyses, which sit beside it.
"""

from artlab.interpret.attribution import (
    Attribution,
    attribute,
    attribute_positive_labels,
    compare_figure,
    overlay_figure,
    top_predictions,
)
from artlab.interpret.featurevis import (
    BeforeAfter,
    Objective,
    RenderSettings,
    Robustness,
    before_after,
    channel,
    class_logit,
    diversity,
    most_changed_channels,
    neuron,
    optimise,
    render_channels,
    whole_layer,
)
from artlab.interpret.projection import (
    collection_map,
    compare_maps,
    image_feature,
    layer_features,
    map_figure,
    neighbours,
    neighbours_figure,
    project,
    separation,
    separation_table,
    write_map_html,
)

__all__ = ["Attribution", "BeforeAfter", "Objective", "RenderSettings", "Robustness", "attribute",
           "attribute_positive_labels", "before_after", "channel", "class_logit", "collection_map", "compare_figure",
           "compare_maps", "diversity", "image_feature", "layer_features", "map_figure", "most_changed_channels",
           "neighbours", "neighbours_figure", "neuron", "optimise", "overlay_figure", "project", "render_channels",
           "separation", "separation_table", "top_predictions", "whole_layer", "write_map_html"]
