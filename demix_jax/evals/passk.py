"""The unbiased pass@k estimator (Chen et al. 2021, "Evaluating Large
Language Models Trained on Code").

With n samples of which c pass, pass@k = 1 - C(n-c, k) / C(n, k): the chance
that k samples drawn without replacement contain at least one pass. The
binomials overflow for moderate n, so it is computed as the product
1 - prod_{i=n-c+1}^{n} (1 - k / i), which is exact algebra and stays in
[0, 1] in floating point. n - c < k means every k-subset holds a pass: 1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k of one problem.

  Args:
    n: samples generated (n >= k).
    c: samples that passed (0 <= c <= n).
    k: the k of pass@k.

  Returns:
    The estimate in [0, 1].
  """
  if not 0 <= c <= n:
    raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
  if not 1 <= k <= n:
    raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
  if n - c < k:
    return 1.0
  i = np.arange(n - c + 1, n + 1, dtype=np.float64)
  return float(1.0 - np.prod(1.0 - k / i))


def mean_pass_at_k(passed: Sequence[Sequence[bool]], k: int) -> float:
  """Mean pass@k over problems, each given as its samples' pass flags."""
  if not passed:
    return float("nan")
  return float(
      np.mean([pass_at_k(len(p), int(sum(map(bool, p))), k) for p in passed])
  )
