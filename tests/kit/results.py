"""Stage results for unit tests: a finished search with nothing in it.

Tests of the final, baselines and report stages need a `SearchResult`
only for a field or two; `search_result(**fields)` fills every other field
with an empty value.
"""

from demix_jax.stages import results


def search_result(**fields) -> results.SearchResult:
  """A SearchResult with empty defaults, `fields` replacing them."""
  base = dict(
      alpha={},
      source_weights={},
      predicted={},
      predicted_std={},
      merged_scores={},
      methods={},
      epochs={},
      rounds=[],
      final_cv={},
      proxies_csv="",
      n_proxies=0,
      diagnostics={},
      config_snippet="",
      objective=results.SearchObjective(kind="target", targets=("t",)),
      search_seconds=0.0,
  )
  base.update(fields)
  return results.SearchResult(**base)
