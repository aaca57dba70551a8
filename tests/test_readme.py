"""The README's Python API snippet runs as printed, on freshly trained runs."""

import re

import numpy as np
import pytest

from tests import kit
from tests.kit import ROOT


def _snippet() -> str:
  text = (ROOT / "README.md").read_text()
  m = re.search(
      r"<!-- api-snippet -->\n```python\n(.*?)```\n<!-- /api-snippet -->",
      text,
      re.S,
  )
  assert m, "README has no api-snippet block"
  return m.group(1)


def test_snippet_is_short_and_uses_the_public_api():
  code = _snippet()
  lines = [ln for ln in code.splitlines() if ln.strip()]
  assert len(lines) <= 10, len(lines)
  assert "import demix_jax as dx" in code
  assert "._" not in code and "sys.path" not in code


@pytest.mark.slow
def test_snippet_runs_on_trained_runs(runlocal_run, tmp_path, capsys):
  # The session's runlocal runs (trained by `make demo`), copied.
  kit.copy_run(runlocal_run.workdir, tmp_path, ("data", "base", "components"))
  code = _snippet()
  code = code.replace('workdir = "workdir/demo"', f'workdir = "{tmp_path}"')
  assert str(tmp_path) in code
  scope = {}
  exec(compile(code, "README.md:api-snippet", "exec"), scope)  # pylint: disable=exec-used
  scores = scope["scores"]
  for target in ("domain/code", "domain/math", "domain/general"):
    assert scores[target].shape == (2,)
    assert np.all(np.isfinite(scores[target]))
  # The two mixtures are different models: their scores differ.
  assert scores["domain/code"][0] != scores["domain/code"][1]
  assert "[" in capsys.readouterr().out
