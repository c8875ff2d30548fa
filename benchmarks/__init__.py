"""streamkit's benchmarks: `python -m benchmarks` (or `make bench`); see README.md.

Kept free of heavy imports: worker subprocesses import `benchmarks.apps.*`.
"""
