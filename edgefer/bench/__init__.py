"""Benchmarking exports: latency, throughput, memory, size and accuracy.

``benchmark(...)`` is the bench job as a library call (``edgefer bench``/``benchmark``);
it is imported on first use, so that measuring workers import only what they need.
"""

__all__ = ["BenchOutcome", "benchmark"]


def __getattr__(name: str):
    if name in __all__:
        from edgefer.bench import job

        return getattr(job, name)
    raise AttributeError(f"module 'edgefer.bench' has no attribute {name!r}")
