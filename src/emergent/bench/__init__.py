"""Benchmarks (`make bench`): variants measured side by side, interleaved, in one run."""
