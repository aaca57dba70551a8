"""Interoperability with the Hugging Face ecosystem (numpy + JAX only).

* `demix_jax.interop.hf`: Qwen3ForCausalLM directories in and out
  (`export_params`, `load_params`, `import_as_run`), including the released
  Qwen3 layout (sharded safetensors, byte-level BPE tokenizer.json).
* `demix_jax.interop.safetensors_np`: the safetensors format with numpy.
* `demix_jax.interop.hf_config`: config.json and tokenizer checks
  (`model_config_from_hf`, `check_config`, `check_vocab`).
* `demix_jax.interop.sp_tokenizer`: a SentencePiece model as Hugging Face
  tokenizer files.
* `demix_jax.interop.bpe_tokenizer`: a byte-level BPE tokenizer.json as
  Hugging Face tokenizer files.

Nothing here imports torch, transformers, safetensors or tokenizers (the
tokenizer files are read as JSON); the first three are test requirements
used to check the files.
"""
