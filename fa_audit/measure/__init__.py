"""Measure: per-layer tensors in, per-layer numbers out."""
