"""Benchmarks of the ledger against its baselines, measured in the same run (`make bench`)."""
