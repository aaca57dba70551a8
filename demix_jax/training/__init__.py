"""Sharded training: mesh and rules, optimizer, Orbax checkpoints, trainer."""
