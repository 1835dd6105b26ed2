"""The strategy explorer: pick how much of the network stays frozen (or which layer feeds off-the-shelf), train
that run (or reuse it), and see it beside off-the-shelf, fine-tuning and scratch on one chart."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from artlab import models
from artlab.experiments.strategies import (
    StrategyComparison,
    chance_level,
    results_table,
    strategy_chart,
    strategy_variant,
)
from artlab.training import RunResult, TrainConfig
from artlab.training.metrics import headline_name
from artlab.widgets.base import Explorer, expect

CHOICES = {"fine_tune": "fine-tune: frozen blocks", "off_the_shelf": "off-the-shelf: feature layer"}


class StrategyExplorer(Explorer):
    """State: `strategy` ('fine_tune' or 'off_the_shelf'), `freeze` and `layer`; `add()` trains or reuses the run.

    The comparison's three runs are on the chart from the start; `freeze` and `layers` add runs up
    front (fine-tuned with the first K blocks frozen; off-the-shelf on another layer's features).
    Each added run is trained once (a finished run of the same settings is reused from the run store).
    """

    title = "strategy explorer"

    def __init__(self, comparison: StrategyComparison, freeze: list[int] | tuple[int, ...] = (),
                 layers: list[str] | tuple[str, ...] = ()):
        expect(comparison, StrategyComparison, "StrategyExplorer", "a StrategyComparison, as "
                                                                   "artlab.run_strategies(...) returns it")
        super().__init__()
        self.comparison = comparison
        tuned = TrainConfig.from_dict(comparison.results["fine_tune"].run.config())
        probe = TrainConfig.from_dict(comparison.results["off_the_shelf"].run.config())
        self.spec = models.arch(tuned.arch)
        self.blocks, self.layers = len(self.spec.blocks), list(self.spec.layers)
        self.default_layer = probe.layer or self.spec.feature_layer
        self.strategy, self.freeze, self.layer = "fine_tune", tuned.freeze, self.default_layer
        self.results: dict[str, RunResult] = {}
        self._order: dict[str, tuple[int, int]] = {}  # label -> (strategy rank, depth), for the chart
        self._keep(self._label("off_the_shelf", layer=self.default_layer), comparison.results["off_the_shelf"],
                   (0, self.layers.index(self.default_layer)))
        self._keep(self._label("fine_tune", freeze=tuned.freeze), comparison.results["fine_tune"], (1, tuned.freeze))
        self._keep("scratch", comparison.results["scratch"], (2, 0))
        for k in freeze:
            self.add("fine_tune", freeze=k)
        for layer in layers:
            self.add("off_the_shelf", layer=layer)

    # ---- state ----------------------------------------------------------------------------------
    @staticmethod
    def _label(strategy: str, freeze: int = 0, layer: str = "") -> str:
        return f"fine-tune ({freeze} frozen)" if strategy == "fine_tune" else f"off-the-shelf ({layer})"

    def _keep(self, label: str, result: RunResult, order: tuple[int, int]) -> None:
        self.results[label], self._order[label] = result, order

    def select(self, strategy: str | None = None, freeze: int | None = None, layer: str | None = None) -> None:
        """Choose the next run to add: the strategy, its frozen blocks (fine-tune) or its layer (off-the-shelf)."""
        if strategy is not None:
            if strategy not in CHOICES:
                raise ValueError(f"strategy must be one of {list(CHOICES)}, not {strategy!r}")
            self.strategy = strategy
        if freeze is not None:
            if not 0 <= int(freeze) <= self.blocks:
                raise ValueError(f"{self.spec.name} has {self.blocks} blocks: freeze 0 to {self.blocks}, not {freeze}")
            self.freeze = int(freeze)
        if layer is not None:
            models.check_layers(self.spec, [layer])
            self.layer = layer

    def _selected(self) -> str:
        """The label of the run selected to add next."""
        return self._label(self.strategy, freeze=self.freeze, layer=self.layer)

    def add(self, strategy: str | None = None, freeze: int | None = None, layer: str | None = None) -> RunResult:
        """Train (or reuse) the selected run, put it on the chart and return it."""
        self.select(strategy, freeze, layer)
        label = self._selected()
        if self.strategy == "fine_tune":
            changes, order = {"freeze": self.freeze}, (1, self.freeze)
        else:
            order = (0, self.layers.index(self.layer))
            changes = {"layer": None if self.layer == self.default_layer else self.layer}
        if label not in self.results:
            self.computed["runs"] += 1
            self._keep(label, strategy_variant(self.comparison, self.strategy, **changes), order)
        self.refresh()
        return self.results[label]

    # ---- what is shown ----------------------------------------------------------------------------
    def table(self) -> pd.DataFrame:
        """The test metrics of every run on the chart, in chart order."""
        ordered = sorted(self.results, key=lambda label: self._order[label])
        return results_table({label: self.results[label] for label in ordered})

    def chart(self) -> go.Figure:
        """Grouped bars of the test metrics per run, with the chance level."""
        table = self.table()
        title = self.comparison.figure.layout.title.text or "off-the-shelf vs fine-tuning vs scratch"
        return strategy_chart(table, title, chance_level(self.comparison.results, table))

    def depth_chart(self) -> go.Figure | None:
        """Test accuracy against the number of frozen blocks, off-the-shelf and scratch as lines (2+ depths)."""
        table = self.table()
        metric = headline_name(table)
        tuned = [label for label in self.results if self._order[label][0] == 1]
        if metric not in table or len(tuned) < 2:
            return None
        depths = pd.DataFrame({"frozen blocks": [self._order[label][1] for label in tuned],
                               metric: [self.results[label].metrics[metric] for label in tuned]})
        fig = px.line(depths.sort_values("frozen blocks"), x="frozen blocks", y=metric, markers=True,
                      range_y=[0, 1], title=f"Fine-tuning with the first blocks frozen: test {metric} "
                                            f"(0 = everything trains, {self.blocks} = nothing but the head)")
        for label in (self._label("off_the_shelf", layer=self.default_layer), "scratch"):
            fig.add_hline(y=self.results[label].metrics[metric], line_dash="dash", annotation_text=label)
        return fig

    def view(self) -> list[object]:
        depth = self.depth_chart()
        return [self.chart(), *([depth] if depth is not None else []), self.table()]

    def controls(self) -> list[object]:
        import ipywidgets as widgets

        strategy = widgets.Dropdown(options=[(text, key) for key, text in CHOICES.items()], value=self.strategy,
                                    description="strategy")
        depth = widgets.SelectionSlider(options=self._depths(), value=self._depth(), description="frozen blocks",
                                        continuous_update=False)
        button = widgets.Button(description="train and compare", icon="play")

        def name_the_run() -> None:
            """The button's tooltip names the run it trains, as this kernel has the choice: a control's change
            waits in the browser while the kernel is busy, a click does not."""
            button.tooltip = f"train {self._selected()} (or reuse it when it exists) and add it to the chart"

        syncing = [False]  # while the slider's options change, its value events are not choices

        def on_strategy(change) -> None:
            self.select(strategy=change["new"])
            syncing[0] = True
            try:
                depth.description = "frozen blocks" if self.strategy == "fine_tune" else "layer"
                depth.options = self._depths()
                depth.value = self._depth()
            finally:
                syncing[0] = False
            name_the_run()

        def on_depth(change) -> None:
            if syncing[0]:
                return
            if self.strategy == "fine_tune":
                self.select(freeze=int(change["new"]))
            else:
                self.select(layer=change["new"])
            name_the_run()

        def on_click(_button) -> None:
            button.disabled, button.description = True, "training..."
            try:
                with self._output:  # progress bars and errors show under the controls
                    try:
                        self.add()
                    except (ValueError, KeyError, RuntimeError, FileExistsError) as exc:
                        self.refresh()  # the chart as it was, without the failed run's progress bars
                        print(f"could not train this run: {exc}")
            finally:
                button.disabled, button.description = False, "train and compare"

        name_the_run()
        strategy.observe(on_strategy, names="value")
        depth.observe(on_depth, names="value")
        button.on_click(on_click)
        return [strategy, depth, button]

    def _depths(self) -> list[str]:
        return [str(k) for k in range(self.blocks + 1)] if self.strategy == "fine_tune" else self.layers

    def _depth(self) -> str:
        return str(self.freeze) if self.strategy == "fine_tune" else self.layer
