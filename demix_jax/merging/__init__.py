"""Merging: merge methods, the component store and the batched merge+evaluate
engine."""
