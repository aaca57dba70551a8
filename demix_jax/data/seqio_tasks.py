"""seqio registration of sources and mixtures, for t5x/seqio users.

Grain is the training path; this module exposes the same data to the seqio
ecosystem (and to evaluation code written against it):

  * every source becomes a `seqio.Task` named `{prefix}_{source}` with splits
    "train" and "validation" (= the source's held-out split) and one
    "targets" feature tokenized with the run's SentencePiece model (+EOS;
    seqio has no byte-level BPE vocabulary, so a BPE run cannot register);
  * a mixture {source: weight} becomes a `seqio.Mixture` whose rates are the
    token weights (zero weights are left out).

TensorFlow and seqio are imported lazily, so importing this module is cheap.
Registration is idempotent: re-registering a name replaces it.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

_SPLITS = {"train": "train", "validation": "heldout"}


def task_name(prefix: str, source: str) -> str:
  return f"{prefix}_{source}"


def _dataset_fn(
    split: str, shuffle_files: bool, seed: int | None = None, *, source
) -> Any:
  """tf.data of {"text": str} over a source split (seqio FunctionDataSource)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  del shuffle_files, seed  # seqio shuffles examples itself
  docs = source.docs(_SPLITS[split])

  def gen():
    for i in range(len(docs)):
      yield {"text": docs[i]}

  return tf.data.Dataset.from_generator(
      gen, output_signature={"text": tf.TensorSpec((), tf.string)}
  )


def register_source_tasks(
    sources: Mapping[str, Any], vocab, prefix: str = "demix"
) -> dict[str, str]:
  """Registers one seqio Task per source; returns source -> task name.

  Args:
    sources: name -> `sources.Source`.
    vocab: a `tokenizer.Vocab` loaded from a file (seqio reads the path).
    prefix: task name prefix.

  Returns:
    source name -> registered task name.
  """
  import seqio  # pylint: disable=g-import-not-at-top

  features = {
      "targets": seqio.Feature(vocabulary=vocab.seqio_vocab, add_eos=True)
  }
  names = {}
  for name, source in sources.items():
    tname = task_name(prefix, name)
    seqio.TaskRegistry.remove(tname)
    seqio.TaskRegistry.add(
        tname,
        source=seqio.FunctionDataSource(
            functools.partial(_dataset_fn, source=source), splits=list(_SPLITS)
        ),
        preprocessors=[
            functools.partial(
                seqio.preprocessors.rekey, key_map={"targets": "text"}
            ),
            seqio.preprocessors.tokenize,
            seqio.preprocessors.append_eos_after_trim,
        ],
        output_features=features,
        metric_fns=[],
    )
    names[name] = tname
  return names


def register_mixture(
    name: str, weights: Mapping[str, float], prefix: str = "demix"
) -> str:
  """Registers a seqio Mixture with rates = token weights; returns its name.

  The source tasks must be registered first (`register_source_tasks`).
  """
  import seqio  # pylint: disable=g-import-not-at-top

  rates = [
      (task_name(prefix, s), float(w))
      for s, w in sorted(weights.items())
      if w > 0
  ]
  if not rates:
    raise ValueError(f"mixture {name!r} has no positive weight")
  mname = f"{prefix}_{name}"
  seqio.MixtureRegistry.remove(mname)
  seqio.MixtureRegistry.add(mname, rates)
  return mname
