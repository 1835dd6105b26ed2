"""Factor sweeps: the product of a grid of TrainConfig values (and of numbers of source classes), over seeds.

    result = sweep(TrainConfig(data="../shared/data/genres", task="label", epochs=3),
                   grid={"freeze": [0, 5, 10, 15, 18], "lr": [0.01, 0.001]})
    result.cells, result.table, result.figure

Each (combination, seed) is a cell: an ordinary run named from the sweep's name and its factor
values, so an interrupted sweep resumes, a finished cell is never trained again, and a failed cell
is recorded with its error and tried again on the next call. The derived factor "source_classes"
trains a source stage on the N largest classes first (one run per N and seed) and starts every
target cell of that N from it. Cells train in worker processes ("spawn"), as many as fit the cores.

    grid.py       the factors checked, the default name, the plan of cells
    execution.py  `sweep`: the cells trained (in workers) or reused, the files written
    chart.py      `Sweep`, the cells' table, the summary per combination, lines and heatmaps
"""

from artlab.experiments.sweep.chart import Sweep, cells_table, summarise, sweep_figure
from artlab.experiments.sweep.execution import default_workers, run_cell, sweep
from artlab.experiments.sweep.grid import METRICS, SOURCE_CLASSES, Cell, check_grid, default_name, plan

__all__ = ["METRICS", "SOURCE_CLASSES", "Cell", "Sweep", "cells_table", "check_grid", "default_name",
           "default_workers", "plan", "run_cell", "summarise", "sweep", "sweep_figure"]
