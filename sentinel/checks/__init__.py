"""Checks: each turns a run's paired outputs into per-slice results."""
