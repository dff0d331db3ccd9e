"""Plato: durable, deterministic orchestration of the media functions."""
