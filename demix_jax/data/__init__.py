"""The data layer: sources, tokenizer, Grain pipelines, token-weighted mixtures.

Modules:
  sources:     document sources (tfds, local files, offline corpora) with
               random-access train / held-out splits and cached token counts.
  offline:     the embedded default corpora, built as local tfds datasets.
  tokenizer:   the `Vocab` interface, SentencePiece models, `load_vocab`
               (either kind) and training on a streamed sample.
  bpe:         byte-level BPE `tokenizer.json` files (Hugging Face
               `tokenizers`, as Qwen3 ships them).
  pipeline:    Grain training iterators (pack per source, then mix) and
               deterministic held-out sequences.
  mixture:     weight validation, the DeMix alpha -> weights mapping and
               repetition accounting.
  seqio_tasks: seqio Task / Mixture registration for interoperability.
"""
