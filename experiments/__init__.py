"""Experiments: benefit packages, stable assignment, causal lift. Framework-free."""
