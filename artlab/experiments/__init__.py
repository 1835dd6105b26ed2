"""Experiments: several runs combined into one comparison (strategies today; studies and sweeps to come)."""

from artlab.experiments.strategies import StrategyComparison, compare_strategies, run_strategies

__all__ = ["StrategyComparison", "compare_strategies", "run_strategies"]
