"""Capture: targets (their triggers and vector tables), the reconciliation sweep, partitions
and drift (a source table that changed under a target)."""
