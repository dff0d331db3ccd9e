"""Stratum: the media functions that run on worker pools (ffmpeg and friends)."""
