"""Evaluation: one engine for every model, set, modality and metric."""
