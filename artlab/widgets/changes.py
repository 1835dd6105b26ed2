"""The change explorer: pick one of an analysis' figures and a layer; see how much that layer moved in fine-tuning.

For the layer: its weights' relative change, how far each of its filters moved (a histogram), its CKA
with the same layer before fine-tuning, and its CKA with every layer of the pretrained network (which
pretrained layer the fine-tuned one now resembles most).
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from artlab.analysis import Analysis
from artlab.widgets.base import Explorer, expect, small_table
from artlab.widgets.offline import Part


class ChangeExplorer(Explorer):
    """State: `figure_id` (any figure of the analysis) and `layer`; each layer's figures are drawn once."""

    title = "what fine-tuning changed"

    def __init__(self, analysis: Analysis, figure_id: str | None = None, layer: str | None = None):
        expect(analysis, Analysis, "ChangeExplorer", "an Analysis, as artlab.analyze(Comparison(run, ...)) returns it")
        super().__init__()
        tables = analysis.tables
        if "params_blocks" not in tables and "cka" not in tables:
            raise ValueError("this analysis has neither 'params' nor 'cka': analyze(Comparison(..., "
                             "what=('params', 'cka')))")
        self.analysis = analysis
        source = tables["params_blocks"] if "params_blocks" in tables else tables["cka"]
        self.layers = list(dict.fromkeys(source["layer"]))
        self.figure_ids = list(analysis.figures)
        self.figure_id = figure_id or self.figure_ids[0]
        self.layer = layer or self.layers[-1]
        self.select(self.figure_id, self.layer)

    def select(self, figure_id: str | None = None, layer: str | None = None) -> None:
        """Show another figure of the analysis, or another layer's details."""
        if figure_id is not None:
            self.analysis.figure(figure_id)  # an unknown id is refused, listing the ids there are
            self.figure_id = figure_id
        if layer is not None:
            if layer not in self.layers:
                raise KeyError(f"no layer {layer!r} in this analysis; choose from {self.layers}")
            self.layer = layer
        self.refresh()

    # ---- what is shown ------------------------------------------------------------------------------
    def facts(self) -> pd.DataFrame:
        """The layer's numbers: relative change of its weights, CKA with itself before, the closest pretrained layer."""
        tables, rows = self.analysis.tables, {}
        if "params_blocks" in tables:
            blocks = tables["params_blocks"].set_index("layer")
            rows["relative change of its weights"] = round(float(blocks.loc[self.layer, "relative_change"]), 4)
        if "cka" in tables:
            cka = tables["cka"][tables["cka"]["layer"] == self.layer]
            for comparison, row in cka.set_index("comparison").iterrows():
                rows[f"linear CKA, {comparison}"] = round(float(row["cka"]), 4)
        column = self._cka_column()
        if len(column):  # the layer took part in the layer x layer CKA
            closest = column.loc[column["cka"].idxmax()]
            rows["most similar pretrained layer"] = f"{closest['layer_a']} (CKA {closest['cka']:.3f})"
        return small_table(rows)

    def _cka_column(self) -> pd.DataFrame:
        """The current fine-tuned layer's CKA with every pretrained layer, shallow first (empty if not analysed)."""
        matrix = self.analysis.tables.get("cka_matrix")
        if matrix is None:
            return pd.DataFrame(columns=["layer_a", "depth_a", "cka"])
        return matrix[matrix["layer_b"] == self.layer].sort_values("depth_a")

    def layer_figures(self) -> list[go.Figure]:
        """How far each filter of the layer moved, and the layer's CKA with every pretrained layer (drawn once)."""
        return self.cached("layer figures", self.layer, self._draw_layer)

    def _draw_layer(self) -> list[go.Figure]:
        tables, shown = self.analysis.tables, []
        if "params_filters" in tables:
            filters = tables["params_filters"][tables["params_filters"]["block"] == self.layer]
            title = (f"{self.layer}: how far each of its {len(filters)} convolution filters moved "
                     f"(relative change mean |W_ft - W_pre| / mean |W_pre|)")
            shown.append(px.histogram(filters, x="relative_change", nbins=40, title=title,
                                      labels={"relative_change": "relative change"}))
        column = self._cka_column()
        if len(column):
            fig = px.line(column, x="layer_a", y="cka", markers=True, range_y=[0, 1.02], title=(
                f"Fine-tuned {self.layer} against every layer of the pretrained network (linear CKA)"),
                labels={"layer_a": "pretrained layer", "cka": "linear CKA"})
            fig.update_xaxes(type="category", tickangle=-45)
            shown.append(fig)
        return shown

    def view(self) -> list[object]:
        return [self.analysis.figure(self.figure_id), self.facts(), *self.layer_figures()]

    def offline_parts(self) -> list[Part]:
        """Every figure of the analysis, and every layer's numbers and figures."""
        return [Part({"figure": self.figure_ids}, lambda figure_id: [self.analysis.figure(figure_id)]),
                Part({"layer": self.layers}, lambda layer: self.at(
                    lambda: [self.facts(), *self.layer_figures()], layer=layer))]

    def controls(self) -> list[object]:
        import ipywidgets as widgets

        figure = widgets.Dropdown(options=self.figure_ids, value=self.figure_id, description="figure")
        layer = widgets.Dropdown(options=self.layers, value=self.layer, description="layer")
        figure.observe(lambda change: self.select(figure_id=change["new"]), names="value")
        layer.observe(lambda change: self.select(layer=change["new"]), names="value")
        return [figure, layer]
