"""Benchmarks of hyperprompt against the tools a user would pick instead.

`python -m bench.run` measures everything in one run on one machine and writes
`bench/results.json`, `BENCHMARKS.md` and `bench/throughput.png` from it.
Benchmarks are never tests: nothing here asserts a time.
"""
