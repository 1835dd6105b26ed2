"""Experiments: runs combined and compared (strategies, bias audits; studies and sweeps to come)."""

from artlab.experiments.audit import Audit, audit, wilson_interval
from artlab.experiments.strategies import StrategyComparison, compare_strategies, run_strategies

__all__ = ["Audit", "StrategyComparison", "audit", "compare_strategies", "run_strategies", "wilson_interval"]
