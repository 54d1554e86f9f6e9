"""Benchmarks of the engine against the tools an SRE would otherwise use.

``python -m bench.run`` (``make bench``) runs every row and writes
``bench/RESULTS.md``; ``python -m bench.data`` only prepares the reference data.
"""
