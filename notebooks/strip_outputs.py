"""Strips outputs from the notebooks so that diffs stay readable.

  python notebooks/strip_outputs.py            # strip notebooks/*.ipynb
  python notebooks/strip_outputs.py --check    # exit 1 if any has outputs
  python notebooks/strip_outputs.py a.ipynb    # only these files

Removes cell outputs, execution counts and per-cell execution metadata
(what nbclient or Jupyter add when a notebook runs); the cells' sources and
the notebook metadata (kernel, Colab settings) are kept.
"""

import argparse
import glob
import os
import sys

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
# Cell metadata written by a run (Jupyter, nbclient, Colab).
RUN_METADATA = ("execution", "collapsed", "scrolled", "outputId", "colab")


def strip(nb: nbformat.NotebookNode) -> bool:
  """Strips `nb` in place; returns True if anything was removed."""
  changed = False
  for cell in nb.cells:
    for key in RUN_METADATA:
      if key in cell.get("metadata", {}):
        del cell.metadata[key]
        changed = True
    if cell.cell_type != "code":
      continue
    if cell.get("outputs"):
      cell.outputs = []
      changed = True
    if cell.get("execution_count") is not None:
      cell.execution_count = None
      changed = True
  return changed


def needs_strip(path: str) -> bool:
  """True if the notebook at `path` carries outputs or run metadata."""
  return strip(nbformat.read(path, as_version=4))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
      "paths", nargs="*", help="notebooks (default: notebooks/*.ipynb)"
  )
  parser.add_argument(
      "--check",
      action="store_true",
      help="only report; exit 1 if a notebook has outputs",
  )
  args = parser.parse_args(argv)
  paths = args.paths or sorted(glob.glob(os.path.join(HERE, "*.ipynb")))
  dirty = []
  for path in paths:
    nb = nbformat.read(path, as_version=4)
    if strip(nb):
      dirty.append(path)
      if not args.check:
        nbformat.write(nb, path)
  for path in dirty:
    print(("has outputs: " if args.check else "stripped: ") + path)
  return 1 if (args.check and dirty) else 0


if __name__ == "__main__":
  sys.exit(main())
