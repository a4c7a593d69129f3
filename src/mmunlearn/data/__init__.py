"""Benchmark data: the data model, the synthetic generator, validation and splits."""
