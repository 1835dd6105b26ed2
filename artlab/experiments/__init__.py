"""Experiments: runs combined and compared (strategies, bias audits; studies and sweeps to come)."""

from artlab.experiments.audit import Audit, audit, wilson_interval
from artlab.experiments.double import ROUTES, Stage, Study, double_finetune
from artlab.experiments.strategies import StrategyComparison, compare_strategies, run_strategies

__all__ = ["ROUTES", "Audit", "Stage", "Study", "StrategyComparison", "audit", "compare_strategies",
           "double_finetune", "run_strategies", "wilson_interval"]
