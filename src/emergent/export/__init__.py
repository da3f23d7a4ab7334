"""Export: ONNX, int8 quantization, parity checks, latency measurement and the model card."""
