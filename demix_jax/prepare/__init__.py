"""Corpus preparation: raw sources -> ArrayRecord shards of token ids.

`python -m demix_jax.prepare --config=...` reads each source of the
config's `data.sources`, tokenizes it with `data.tokenizer.path`, and writes
under `--out_dir`, per source:

  <out_dir>/<source>/manifest.json           written last (see manifest.py)
  <out_dir>/<source>/train-00007-of-00012.arrayrecord
  <out_dir>/<source>/heldout-00007-of-00012.arrayrecord
  <out_dir>/<source>/units/unit-00007.json   one commit record per work unit
  <out_dir>/<source>/units/plan.json         the work units (workers read it)

Modules: `manifest` (the on-disk format and the streaming shard reader),
`units` (the cheap pre-pass: bad-input checks and the split of every source
into work units), `beam_pipeline` (the Apache Beam pipeline that tokenizes
and writes one unit per element). This package's `__init__` imports nothing
heavy: the data library reads manifests without loading Beam.
"""
