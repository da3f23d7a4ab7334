"""Evaluation: metrics, plots and error reports."""
