"""Inverse problems: forward operators, their measurements, losses and metrics."""
