"""Data: tables on any fsspec URL, the benchmark protocol, ingest and shards (no torch)."""
