"""Evaluation: benchmark loading (tokenized once), held-out rows, scoring and
domain aggregation."""
