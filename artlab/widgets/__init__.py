"""Notebook widgets: interactive views over artlab's result objects (they compute nothing themselves).

Each explorer keeps its state in attributes you can set from code (`select(...)`), shows `view()`
(plotly figures and tables), and falls back to that static view when no front end is attached.
"""

from artlab.widgets.artworks import ArtworkInspector
from artlab.widgets.audit import AuditExplorer
from artlab.widgets.base import Explorer, live_front_end
from artlab.widgets.changes import ChangeExplorer
from artlab.widgets.channels import ChannelExplorer
from artlab.widgets.collection import CollectionBrowser
from artlab.widgets.collection_map import CollectionMap
from artlab.widgets.strategies import StrategyExplorer
from artlab.widgets.sweep import SweepExplorer
from artlab.widgets.topk import TopKBrowser, topk_browser, topk_gallery

__all__ = ["ArtworkInspector", "AuditExplorer", "ChangeExplorer", "ChannelExplorer", "CollectionBrowser",
           "CollectionMap", "Explorer", "StrategyExplorer", "SweepExplorer", "TopKBrowser", "live_front_end",
           "topk_browser", "topk_gallery"]
