"""Benchmarks (``make bench``): numbers are printed, never asserted."""
