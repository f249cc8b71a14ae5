"""Benchmarks (issue 5). quick.py is a first measurement; the full harness is still to come."""
