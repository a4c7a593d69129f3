"""Pareto fronts and operating points of (efficacy ↓, utility ↑) trials, and each study's summary file."""

from __future__ import annotations

from collections.abc import Sequence


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a`` forgets at least as much and keeps at least as much as ``b``, and is strictly better in one."""
    return a[0] <= b[0] and a[1] >= b[1] and a != b


def on_front(candidate: tuple[float, float], others: Sequence[tuple[float, float]]) -> bool:
    return not any(dominates(other, candidate) for other in others)


def pareto_front(points: Sequence[dict]) -> list[dict]:
    """The non-dominated entries of ``points`` (dicts with "efficacy" and "utility"), by efficacy."""
    pairs = [(p["efficacy"], p["utility"]) for p in points]
    front = [p for p, pair in zip(points, pairs) if on_front(pair, pairs)]
    return sorted(front, key=lambda p: (p["efficacy"], -p["utility"]))


def operating_point(front: Sequence[dict], vanilla_utility: float, max_utility_loss: float) -> dict | None:
    """The front trial that forgets most while keeping utility ≥ vanilla − ``max_utility_loss`` (None if none does)."""
    allowed = [p for p in front if p["utility"] >= vanilla_utility - max_utility_loss]
    return min(allowed, key=lambda p: (p["efficacy"], -p["utility"])) if allowed else None
