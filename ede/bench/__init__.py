"""Benchmark helpers: peer methods compared against ede."""
