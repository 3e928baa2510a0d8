"""Benchmarks (``make bench``): jobsys side by side with plain Procrastinate."""
