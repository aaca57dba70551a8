"""seqio interoperability: registered source tasks and a mixture yield data."""

import pytest

from demix_jax.data import seqio_tasks


def test_registered_mixture_yields_examples(offline_sources, vocab):
  seqio = pytest.importorskip("seqio")
  names = seqio_tasks.register_source_tasks(offline_sources, vocab, prefix="t")
  assert names == {n: f"t_{n}" for n in offline_sources}
  mix = seqio_tasks.register_mixture(
      "m", {"general": 0.5, "math": 0.5, "code": 0.0}, prefix="t"
  )
  mixture = seqio.get_mixture_or_task(mix)
  assert sorted(t.name for t in mixture.tasks) == ["t_general", "t_math"]
  ds = mixture.get_dataset(
      sequence_length={"targets": 32},
      split="train",
      shuffle=True,
      seed=0,
      num_epochs=1,
      use_cached=False,
  )
  examples = list(ds.take(4).as_numpy_iterator())
  assert len(examples) == 4
  for ex in examples:
    assert 0 < len(ex["targets"]) <= 32
  # The validation split is the source's held-out split, tokenized alike.
  task = seqio.get_mixture_or_task("t_math")
  ex = next(
      task.get_dataset(
          sequence_length={"targets": 512}, split="validation", shuffle=False
      ).as_numpy_iterator()
  )
  text = offline_sources["math"].docs("heldout")[0]
  assert list(ex["targets"]) == vocab.encode(text) + [vocab.eos_id]
