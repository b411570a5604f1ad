"""The exporter: graph functions (forward + VJP per stage, LPIPS, loss heads, fused steps), ONNX
export, TensorRT lint, verification and the graph cache."""
