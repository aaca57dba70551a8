"""The data layer: sources, tokenizer, Grain pipelines, token-weighted mixtures.

Modules:
  sources:     document sources (tfds, local files, offline corpora) with
               random-access train / held-out splits and cached token counts.
  offline:     the embedded default corpora, built as local tfds datasets.
  tokenizer:   the `Vocab` (SentencePiece via seqio) and its training.
  pipeline:    Grain training iterators (pack per source, then mix) and
               deterministic held-out sequences.
  mixture:     weight validation, the DeMix alpha -> weights mapping and
               repetition accounting.
  seqio_tasks: seqio Task / Mixture registration for interoperability.
"""
