"""Optuna trade-off studies: each method's forget-efficacy / utility Pareto front (pipelines/tradeoff)."""
