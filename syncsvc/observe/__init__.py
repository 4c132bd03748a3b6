"""What the service tells operators: Prometheus metrics, status, the error log and progress
lines. Imports ``core`` and ``db``; every later stage may record here."""
