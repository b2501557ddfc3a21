"""Benchmarking exports: latency, throughput, memory, size and accuracy."""
