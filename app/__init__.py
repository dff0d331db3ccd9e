"""Cosmos: media processing on Temporal (Optimus: api, Plato: workflows, Stratum: activities)."""
