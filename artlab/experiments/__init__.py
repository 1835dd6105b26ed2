"""Experiments: runs combined and compared (strategies, double fine-tuning, multi-task, sweeps, bias audits).

Every study takes a base `TrainConfig` (or a mapping of its fields) and what varies, and returns a
`Study`: its cells, summary, paired differences, figure and report.
"""

from artlab.experiments.audit import Audit, audit, wilson_interval
from artlab.experiments.double import ROUTES, STAGE_CHANGES, double_finetune, stage_changes
from artlab.experiments.multitask import multitask_study
from artlab.experiments.settings import NotebookSettings, notebook_settings
from artlab.experiments.strategies import StrategyComparison, compare_strategies, run_strategies, strategy_variant
from artlab.experiments.study import Study
from artlab.experiments.sweep import Sweep, sweep

__all__ = ["Audit", "NotebookSettings", "ROUTES", "STAGE_CHANGES", "StrategyComparison", "Study", "Sweep", "audit",
           "compare_strategies", "double_finetune", "multitask_study", "notebook_settings", "run_strategies",
           "stage_changes", "strategy_variant", "sweep", "wilson_interval"]
