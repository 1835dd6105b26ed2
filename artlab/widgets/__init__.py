"""Notebook widgets: interactive views over artlab's result objects (they compute nothing themselves)."""

from artlab.widgets.topk import topk_browser, topk_gallery

__all__ = ["topk_browser", "topk_gallery"]
