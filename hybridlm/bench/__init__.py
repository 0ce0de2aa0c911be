"""Benchmarks for the hardware a hybrid model will run on.

One module per benchmark (`blocks`, `comms`, `gemm`), all built on two shared pieces:
`timing` (how a number is measured) and `report` (how records are shown, saved and compared).
Every benchmark produces a list of flat dict records, so `bench compare` works on any of them.
"""
