"""Fleet-scale benchmark: archify side by side with the naive sequential loop and the
raw-SQL floor. Run it with `python -m benchmarks.run` (see docs/performance.md)."""
