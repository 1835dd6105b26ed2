"""Experiments: runs combined and compared (strategies, double fine-tuning, multi-task, sweeps, bias audits)."""

from artlab.experiments.audit import Audit, audit, wilson_interval
from artlab.experiments.double import ROUTES, STAGE_CHANGES, Stage, Study, double_finetune, stage_changes
from artlab.experiments.multitask import MultiTaskStudy, multitask_study
from artlab.experiments.settings import NotebookSettings, notebook_settings
from artlab.experiments.strategies import StrategyComparison, compare_strategies, run_strategies, strategy_variant
from artlab.experiments.sweep import Sweep, sweep

__all__ = ["Audit", "MultiTaskStudy", "NotebookSettings", "ROUTES", "STAGE_CHANGES", "Stage", "StrategyComparison",
           "Study", "Sweep", "audit", "compare_strategies", "double_finetune", "multitask_study",
           "notebook_settings", "run_strategies", "stage_changes", "strategy_variant", "sweep", "wilson_interval"]
