"""Metrics computed from count tables, with bootstrap confidence intervals."""
