"""Benchmarks: scripts that print numbers (``python -m bench.run_all``). Not tests."""
