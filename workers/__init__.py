"""Worker entry points: one process per pool (Stratum)."""
