"""Serving: the int8 ONNX predictor (CLI `predict`, MLflow pyfunc) and its registry model."""
