"""Benchmarks and load harnesses; run with `python -m bench.<name>`. Not tests: they print figures."""
