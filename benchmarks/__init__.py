"""The benchmark scripts, importable as `benchmarks.<script>` from the repository root (each
also runs as `python benchmarks/<script>.py`); `benchmarks.report` is the harness they share."""
