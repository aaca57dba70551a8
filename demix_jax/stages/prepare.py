"""Stage 0 (opt-in): the config's sources as token shards, on Apache Beam.

Listed first in `stages` (`configs/local_jsonl.py` and the qwen3 configs do
so; the demo does not, its offline corpora are small), it runs
`demix_jax.prepare` for every source of `data.sources` into
`<prepare.out_dir or workdir/prepare>/<source>`: ArrayRecord shards of token
ids, the held-out split by document hash, and a manifest per source. Beam's
in-process runner is the default; `prepare.beam_args` passes options such as
`--runner=DataflowRunner` through unchanged.

Every later stage then reads the shards (`adapt` points each source's
`prepared` at its directory; a source reads its shards once their manifest
matches its spec): the data caches (token counts for the prior, budgets,
epoch caps and the natural baseline) are built after this stage, from the
manifests' exact counts, and the loaders stream the shards with each host
reading its own. The config hash is that of the raw sources: prepared and
raw reads give the same documents and tokens on one host
(tests/prepare/), so finished stages stay valid.

A killed prepare leaves no partial shard visible and the rerun finishes the
units that are missing; a finished one is skipped like any stage.
"""

from __future__ import annotations

import dataclasses

from etils import epath

from demix_jax import guards
from demix_jax import multihost
from demix_jax import spec as spec_lib
from demix_jax.prepare import manifest as manifest_lib
from demix_jax.prepare import runner as runner_lib
from demix_jax.prepare import units as units_lib
from demix_jax.stages import common
from demix_jax.stages import results
from demix_jax.stages import stage as stage_lib

NAME = "prepare"


def out_dir(spec: spec_lib.RunSpec, workdir) -> str:
  """Where the shards go: `prepare.out_dir`, else `<workdir>/prepare`."""
  return spec.prepare.out_dir or str(epath.Path(workdir) / NAME)


def adapt(spec: spec_lib.RunSpec, workdir: str) -> spec_lib.RunSpec:
  """The spec whose sources read prepare's shards (once they exist).

  A source of kind "prepared" is shards already; one that names its own
  `prepared` directory keeps it.
  """
  base = out_dir(spec, workdir)
  sources = {}
  for name, src in spec.data.sources.items():
    if src.kind != "prepared" and not src.prepared:
      src = dataclasses.replace(src, prepared=f"{base.rstrip('/')}/{name}")
    sources[name] = src
  data = dataclasses.replace(spec.data, sources=sources)
  return dataclasses.replace(spec, data=data)


def run(spec: spec_lib.RunSpec, inputs: common.Inputs) -> results.Result:
  ws = inputs.ws
  # The tokenizer first (trained on a sample of the raw sources when
  # data.tokenizer.path is ""): the shards hold its ids.
  vocab = ws.data.vocab
  p = spec.prepare
  options = units_lib.PrepareOptions(
      out_dir=out_dir(spec, ws.workdir),
      unit_bytes=int(p.unit_mb * (1 << 20)),
      unit_docs=p.unit_docs,
      encode_batch=p.encode_batch,
      # Offline corpora are built where the raw runs build them.
      cache_dir=str(ws.data.data_dir / "corpora"),
  )
  specs = dict(spec.data.sources)
  if multihost.is_writer():
    # One Beam job writes every shard; the other hosts wait for it.
    with guards.readable(specs):
      runner_lib.prepare_sources(specs, vocab, options, list(p.beam_args))
  multihost.barrier("prepare")
  out = {}
  for name, src in specs.items():
    directory = (
        src.data_dir
        if src.kind == "prepared"
        else units_lib.source_dir(src, options.out_dir)
    )
    m = manifest_lib.read_manifest(directory, name)
    tr, held = m["splits"]["train"], m["splits"]["heldout"]
    out[name] = results.PreparedSource(
        directory=directory,
        documents=int(tr["documents"]),
        tokens=int(tr["tokens"]),
        heldout_documents=int(held["documents"]),
        heldout_tokens=int(held["tokens"]),
        shards=len(tr["shards"]) + len(held["shards"]),
    )
  return results.PrepareResult(
      sources=out, tokenizer_fingerprint=vocab.fingerprint
  )


STAGE = stage_lib.Stage(
    name=NAME,
    requires=(),
    result=results.PrepareResult,
    run=run,
    # The shards are the sources' documents in the tokenizer's ids; unit
    # sizes and Beam options change the layout, not the data.
    hashed=("data.sources", "data.tokenizer", "data.offline_max_docs"),
    reads_data=False,
    adapt=adapt,
    prepares_data=True,
)
