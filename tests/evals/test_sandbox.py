"""The code sandbox: checks, the plain-data wire, limits, modes, preflight.

The attacks are in test_sandbox_hostile.py; here is what a well-behaved
program and its tests see, and how failures are reported.
"""

import glob
import math
import os
import struct
import tempfile
import textwrap

import pytest

from demix_jax import config_lib
from demix_jax.config_lib import ConfigError
from demix_jax.evals import sandbox
from demix_jax.evals.sandbox import isolation
from demix_jax.evals.sandbox import judge as judge_lib
from demix_jax.evals.sandbox import wire
from demix_jax.spec import evaluation

LIMITS = sandbox.SandboxLimits(
    timeout_s=60.0,
    cpu_s=2,
    memory_bytes=256 << 20,
    file_bytes=1 << 20,
    workers=2,
)
UNSAFE = sandbox.SandboxLimits(
    timeout_s=60.0, cpu_s=2, memory_bytes=256 << 20, isolation="none_unsafe"
)


def check(program, tests="", limits=LIMITS, **kw):
  c = sandbox.Check(
      program=textwrap.dedent(program), tests=textwrap.dedent(tests), **kw
  )
  return sandbox.run_check(c, limits)


# ------------------------------------------------------------------- wire
@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(10**30),
        1.5,
        -0.0,
        math.inf,
        "é\n\x00",
        b"\x00\xff",
        1 + 2j,
        [1, [2.0, "3"]],
        (1, (2,), ()),
        {1: "a", (2, 3): [4], "k": {None: True}},
        {1, "x", (2,)},
        frozenset({1, 2}),
    ],
)
def test_wire_round_trip_keeps_types(value):
  data = wire.encode(value, [])
  back = wire.decode(wire.loads(wire.dumps({"v": data}))["v"], None)
  assert back == value and type(back) is type(value)
  if isinstance(value, (list, tuple, dict)) and value:
    first = next(iter(value))
    assert type(next(iter(back))) is type(first)


def test_wire_nan_and_subclasses():
  (back,) = wire.decode(wire.encode([math.nan], []), None)
  assert math.isnan(back)

  class Loud(int):

    def __eq__(self, other):
      return True

  assert type(wire.encode(Loud(3), [])) is int
  refs = []
  assert wire.encode(object, refs) == {"ref": 0} and refs == [object]


@pytest.mark.parametrize(
    "data",
    [
        [1, 2],  # an untagged list
        {"list": [1], "x": 2},
        {"eval": "1"},
        {"set": [{"list": [1]}]},  # unhashable member
        {"dict": [[1]]},
        {"bytes": "zz"},
        {"complex": ["1", 2]},
        {"ref": -1},
    ],
)
def test_wire_decode_rejects_what_is_not_plain_data(data):
  with pytest.raises(wire.WireError):
    wire.decode(data, lambda n: n)


def test_wire_depth_and_line_limits():
  deep = 1
  for _ in range(wire.MAX_DEPTH + 5):
    deep = {"list": [deep]}
  with pytest.raises(wire.WireError):
    wire.decode(deep, None)
  with pytest.raises(wire.WireError):
    wire.loads(b'{"a": 1}')  # cut short: no newline
  with pytest.raises(wire.WireError):
    wire.loads(b"[1]\n")


def test_remote_has_no_truth_value_or_equality():
  r = wire.Remote(0)
  assert r != 0 and r == r and not (r == wire.Remote(0))
  with pytest.raises(TypeError):
    bool(r)
  with pytest.raises(TypeError):
    r()


def test_judge_refuses_to_send_objects_that_are_not_data():
  conn = judge_lib.Connection.__new__(judge_lib.Connection)
  conn.broken = ""
  with pytest.raises(TypeError, match="cannot be passed"):
    conn.call(0, (lambda: 1,), {})


# ---------------------------------------------------------------- seccomp
@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_seccomp_filter_is_well_formed(machine):
  prog = isolation.seccomp_filter(machine)
  assert len(prog) % 8 == 0
  ins = [
      struct.unpack("=HBBI", prog[i : i + 8]) for i in range(0, len(prog), 8)
  ]
  for pc, (code, jt, jf, _) in enumerate(ins):
    if code in (0x15, 0x35, 0x45):  # conditional jumps stay inside
      assert pc + 1 + max(jt, jf) < len(ins)
  assert ins[-1][0] == 0x06  # ends with a return
  with pytest.raises(ValueError, match="architecture"):
    isolation.seccomp_filter("mips")


# ------------------------------------------------------------------ runs
def test_a_correct_solution_passes_and_a_wrong_one_fails():
  tests = "assert add(2, 3) == 5\nassert add(0.5, 1) == 1.5\n"
  r = check("def add(a, b):\n  return a + b\n", tests)
  assert r.passed and r.reason == "passed" and r.returncode == 0, r
  r = check("def add(a, b):\n  return a * b\n", tests)
  assert not r.passed and r.reason == "AssertionError"


def test_values_keep_their_types_across():
  r = check(
      "def f():\n  return (1, [2], {3: {4}}, 'x', b'y', None, True, 2.0)\n",
      "assert f() == (1, [2], {3: {4}}, 'x', b'y', None, True, 2.0)\n"
      "assert type(f()[0]) is int and type(f()[-1]) is float\n"
      "assert f() != [1, [2], {3: {4}}, 'x', b'y', None, True, 2.0]\n",
  )
  assert r.passed, r


def test_exceptions_cross_as_their_builtin_type():
  r = check(
      "def f(x):\n  if x < 0:\n    raise ValueError('negative')\n  return x\n",
      "try:\n  f(-1)\n  raise AssertionError('no error')\n"
      "except ValueError as e:\n  assert 'negative' in str(e)\n",
  )
  assert r.passed, r
  r = check("def f():\n  raise KeyError(1)\n", "f()\n")
  assert not r.passed and r.reason.startswith("KeyError")


def test_program_objects_can_be_passed_back():
  r = check(
      """
      class Node:
        def __init__(self, v, nxt=None):
          self.v, self.nxt = v, nxt
      def length(n):
        return 0 if n is None else 1 + length(n.nxt)
      head = Node(1, Node(2, Node(3)))
      """,
      "assert length(head) == 3\nassert length(Node(7)) == 1\n",
  )
  assert r.passed, r


def test_trusted_helpers_cannot_be_replaced_but_remote_names_can():
  program = "def helper(x):\n  return 0\ndef f(x):\n  return x\nsum = f\n"
  # helper is trusted (defined in `trusted`); f is the program's.
  trusted = "def helper(x):\n  return x + 1\ndef f(x):\n  pass\n"
  r = check(
      program,
      "assert helper(f(1)) == 2\n",
      trusted=trusted,
      remote=("f",),
  )
  assert r.passed, r
  # A builtin name is the builtin unless named remote (MBPP's `sum`).
  r = check(program, "assert sum([1, 2]) == 3\n")
  assert r.passed, r
  r = check(program, "assert sum([1, 2]) == [1, 2]\n", remote=("sum",))
  assert r.passed, r


def test_load_errors_and_missing_names_fail():
  r = check("def f(:\n", "f()\n")
  assert not r.passed and "SyntaxError" in r.reason
  r = check("raise ValueError('boom')\n")
  assert not r.passed and r.reason == "program failed: ValueError: boom"
  r = check("x = 1\n", "g()\n")
  assert not r.passed and r.reason.startswith("NameError")
  r = check("x = 1\n", "f()\n", remote=("f",))
  assert not r.passed and r.reason == "program defines no f"


def test_prints_of_the_program_are_reported_not_judged():
  r = check(
      "import sys\nprint('hello')\nprint('oops', file=sys.stderr)\n"
      "def f():\n  return 1\n",
      "assert f() == 1\n",
  )
  assert r.passed and "hello" in r.stderr_tail and "oops" in r.stderr_tail


def test_wall_clock_timeout():
  limits = sandbox.SandboxLimits(timeout_s=1.0, cpu_s=5)
  r = check("import time\ntime.sleep(1000)\n", "", limits)
  assert not r.passed and r.reason.startswith("timeout after 1s")
  assert r.returncode is None


def test_the_environment_is_clean_and_the_scratch_fresh():
  os.environ["HTTP_PROXY"] = "http://proxy.invalid:1"
  try:
    r = check(
        "import os\ndef env():\n  return dict(os.environ)\n"
        "def scratch():\n  return os.getcwd(), os.listdir('.')\n",
        "assert not any(k.lower().endswith('_proxy') for k in env())\n"
        "assert env()['HOME'] == '/tmp'\n"
        "assert scratch() == ('/tmp', [])\n",
    )
  finally:
    del os.environ["HTTP_PROXY"]
  assert r.passed, r


def test_only_the_standard_library_is_importable():
  r = check(
      "import json, re, collections\n"
      "def has(m):\n  import importlib.util\n"
      "  return importlib.util.find_spec(m) is not None\n",
      "assert has('heapq') and not has('numpy') and not has('demix_jax')\n",
  )
  assert r.passed, r


def test_parallel_batch_keeps_order_and_leaves_nothing():
  before = set(
      glob.glob(os.path.join(tempfile.gettempdir(), "demix_sandbox_*"))
  )
  items = [
      sandbox.Check("def f():\n  return 1\n", "assert f() == 1\n"),
      "while True:\n  pass\n",
      "import sys\nsys.exit(0)\n",
      "x = 1\nassert x == 1\n",
      "import os\nos.fork()\n",
      "raise ValueError('boom')\n",
  ]
  res = sandbox.run_checks(items, LIMITS)
  assert [r.passed for r in res] == [True, False, False, True, False, False]
  assert res[1].reason == "cpu time limit"
  assert "SystemExit" in res[2].reason
  assert "PermissionError" in res[4].reason  # seccomp: EPERM
  assert "ValueError: boom" in res[5].reason
  after = set(glob.glob(os.path.join(tempfile.gettempdir(), "demix_sandbox_*")))
  assert after <= before


# ------------------------------------------------------ none_unsafe mode
def test_unsafe_mode_runs_the_same_checks_with_guards(caplog):
  r = sandbox.run_checks(
      [sandbox.Check("def f():\n  return 2\n", "assert f() == 2\n")], UNSAFE
  )[0]
  assert r.passed, r
  assert "UNSAFE" in caplog.text
  r = check("import os\ntry:\n  os.fork()\nexcept Exception:\n  pass\n",
            limits=UNSAFE)  # fmt: skip
  assert not r.passed and r.reason == "blocked fork"


# ---------------------------------------------------- preflight and config
def test_check_isolation_passes_here_and_names_the_fix(monkeypatch):
  sandbox.check_isolation(LIMITS)
  sandbox.check_isolation(UNSAFE)  # only warns
  real = isolation.shutil.which
  monkeypatch.setattr(
      isolation.shutil, "which", lambda t: None if t == "bwrap" else real(t)
  )
  with pytest.raises(ConfigError) as e:
    sandbox.check_isolation(LIMITS)
  assert e.value.field == "eval.generation.sandbox.isolation"
  assert "apt-get install bubblewrap" in str(e.value)
  assert "none_unsafe" in str(e.value)
  with pytest.raises(ConfigError):  # before any program runs
    sandbox.run_checks(["x = 1\n"], LIMITS)


def test_isolation_config_field():
  def read(value):
    section = {
        "timeout_s": 5.0, "cpu_s": 5, "memory_mb": 256, "file_mb": 1,
        "workers": 1, "network_namespace": True, "isolation": value,
    }  # fmt: skip
    cfg = {"eval": {"generation": {"sandbox": section}}}
    return evaluation.sandbox(config_lib.Reader(cfg))

  assert read("bwrap").isolation == "bwrap"
  assert read("none_unsafe").isolation == "none_unsafe"
  with pytest.raises(ConfigError) as e:
    read("docker")
  assert e.value.field == "eval.generation.sandbox.isolation"
  with pytest.raises(ValueError, match="isolation"):
    sandbox.SandboxLimits(isolation="off")
