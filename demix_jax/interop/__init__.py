"""Interoperability with the Hugging Face ecosystem (numpy + JAX only).

* `demix_jax.interop.hf`: Qwen3ForCausalLM directories in and out
  (`export_params`, `load_params`, `model_config_from_hf`, `check_vocab`).
* `demix_jax.interop.safetensors_np`: the safetensors format with numpy.
* `demix_jax.interop.sp_tokenizer`: a SentencePiece model as Hugging Face
  tokenizer files.

Nothing here imports torch, transformers or safetensors; those are test
requirements (requirements-test.txt) used to check the files.
"""
