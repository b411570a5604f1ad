"""The latency harness behind `ilo bench`, and the memory check of its batches."""
