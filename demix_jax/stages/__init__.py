"""The pipeline's stages, one module each, each with its `Stage` record.

A stage reads its typed inputs (the RunSpec, the workspace, the results of
the stages it requires) and returns a frozen result (stages/results.py).
`stages/stage.py` says what a stage is, `stages/registry.py` lists them in
order. Ordering, prerequisites, hashing, saving and loading results are the
pipeline's (demix_jax/pipeline.py), not the stages'.

This file imports nothing, so that config validation can read the stage
names (`stages.stage.ORDER`) without importing the stages.
"""
