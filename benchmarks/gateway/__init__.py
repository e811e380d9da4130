"""Helpers for benchmarks/bench_gateway.py: fake upstream, load client, process control."""
