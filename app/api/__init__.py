"""Optimus: the stateless HTTP layer. It validates, starts or finds workflows, and reports."""
