"""emergent: raw text to small, trustworthy, quantized language models, reproducibly."""

__version__ = "0.1.0"
