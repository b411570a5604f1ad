"""Torch generators as chains of stages, checkpoint loaders, and (later) the graph exporter."""
