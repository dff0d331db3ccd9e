"""Manifests written by the project: codec strings, the HLS master playlist, the DASH MPD."""
