"""Runtimes that run the exported graphs: ONNX Runtime, TensorRT, torch, and the autograd bridge."""
