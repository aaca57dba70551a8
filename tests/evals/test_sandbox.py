"""The code sandbox: every hostile program fails, is reported, harms nothing."""

import glob
import os
import tempfile
import textwrap
import time

from demix_jax.evals import sandbox

# The wall-clock limit is generous: the machine may be heavily shared, and
# only the sleeping test waits for it.
LIMITS = sandbox.SandboxLimits(
    timeout_s=60.0,
    cpu_s=1,
    memory_bytes=256 << 20,
    file_bytes=1 << 20,
    workers=2,
)


def run(src, limits=LIMITS):
  return sandbox.run_program(textwrap.dedent(src), limits)


def test_passing_program():
  r = run("""
      from __future__ import annotations
      def f(x: list) -> int:
        return len(x)
      assert f([1, 2]) == 2
      print("output of its own is fine")
  """)
  assert r.passed and r.reason == "passed" and r.returncode == 0


def test_failing_assertion():
  r = run("assert 1 + 1 == 3\n")
  assert not r.passed and "AssertionError" in r.reason


def test_sys_exit_zero_before_tests_is_a_failure():
  r = run("""
      import sys
      sys.exit(0)
      assert False, "the tests never ran"
  """)
  assert not r.passed and r.returncode == 0
  assert "exited before the tests finished" in r.reason


def test_os_exit_zero_is_a_failure():
  r = run("import os\nos._exit(0)\n")
  assert not r.passed and "exited before" in r.reason


def test_printing_a_fake_sentinel_is_not_a_pass():
  r = run("""
      import sys
      print("DEMIX-SANDBOX-OK-" + "0" * 32)
      sys.exit(0)
  """)
  assert not r.passed


def test_infinite_loop_hits_cpu_limit():
  r = run("while True:\n  pass\n")
  assert not r.passed and r.reason == "cpu time limit", r
  assert r.seconds < LIMITS.timeout_s


def test_sleeping_forever_is_killed_at_wall_clock_timeout():
  limits = sandbox.SandboxLimits(timeout_s=1.0, cpu_s=5)
  t0 = time.monotonic()
  r = run("import time\ntime.sleep(1000)\n", limits)
  assert not r.passed and r.reason.startswith("timeout after 1s")
  assert r.returncode is None and time.monotonic() - t0 < 5


def test_fork_bomb_is_stopped():
  r = run("""
      import os
      while True:
        os.fork()
  """)
  assert not r.passed and r.reason == "blocked fork"


def test_caught_violation_still_fails():
  r = run("""
      import os
      try:
        os.fork()
      except Exception:
        pass
  """)
  assert not r.passed and r.reason == "blocked fork"


def test_subprocess_and_multiprocessing_are_refused():
  for mod in ("subprocess", "multiprocessing", "ctypes"):
    r = run(f"import {mod}\n")
    assert not r.passed and r.reason == f"blocked import of {mod}"
  r = run("import os\nos.system('true')\n")
  assert not r.passed and r.reason == "blocked system"


def test_killing_the_parent_is_refused():
  r = run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n")
  assert not r.passed and r.reason == "blocked kill"


def test_unbounded_allocation_hits_memory_limit():
  r = run("""
      x = []
      while True:
        x.append(bytearray(10 ** 7))
  """)
  assert not r.passed and "memory" in r.reason, r


def test_writing_outside_its_directory_is_refused():
  outside = tempfile.mkdtemp(prefix="sandbox_test_outside_")
  target = os.path.join(outside, "escaped.txt")
  try:
    for src in (
        f"open({target!r}, 'w').write('x')\n",
        f"import pathlib\npathlib.Path({target!r}).write_text('x')\n",
        f"import os\nos.close(os.open({target!r}, os.O_CREAT | os.O_WRONLY))\n",
        f"import os\nos.chdir({outside!r})\nopen('escaped.txt', 'w')\n",
        f"import shutil\nshutil.rmtree({outside!r})\n",
    ):
      r = run(src)
      assert not r.passed and r.reason.startswith("blocked"), (src, r)
      assert os.path.isdir(outside) and not os.path.exists(target)
  finally:
    os.rmdir(outside)


def test_writing_inside_its_directory_is_fine():
  r = run("""
      import os, tempfile
      with open("notes.txt", "w") as f:
        f.write("ok")
      with tempfile.NamedTemporaryFile("w", delete=False) as f:
        f.write("tmp")
      os.remove("notes.txt")
  """)
  assert r.passed, r


def test_file_size_limit():
  r = run("open('big', 'wb').write(b'x' * (8 << 20))\n")
  assert not r.passed and (
      "File too large" in r.reason or r.reason == "file size limit"
  )


def test_network_is_refused():
  r = run("""
      import socket
      socket.create_connection(("127.0.0.1", 9))
  """)
  assert not r.passed and r.reason == "blocked network"
  r = run("import socket\nsocket.socket()\n")
  assert not r.passed and r.reason == "blocked network (socket)"


def test_environment_is_clean_and_cwd_fresh():
  os.environ["HTTP_PROXY"] = "http://proxy.invalid:1"
  try:
    r = run("""
        import os
        assert not any(k.lower().endswith("_proxy") for k in os.environ)
        assert set(os.listdir(".")) == {"program.py", ".stdout", ".stderr"}
        assert os.environ["HOME"] == os.getcwd()
    """)
  finally:
    del os.environ["HTTP_PROXY"]
  assert r.passed, r


def test_parallel_batch_keeps_order_and_isolates_failures():
  before = set(
      glob.glob(os.path.join(tempfile.gettempdir(), "demix_sandbox_*"))
  )
  progs = [
      "assert True\n",
      "while True:\n  pass\n",
      "import sys\nsys.exit(0)\n",
      "x = 1\nassert x == 1\n",
      "import os\nos.fork()\n",
      "raise ValueError('boom')\n",
  ]
  res = sandbox.run_programs(progs, LIMITS)
  assert [r.passed for r in res] == [True, False, False, True, False, False]
  assert "ValueError: boom" in res[5].reason
  after = set(glob.glob(os.path.join(tempfile.gettempdir(), "demix_sandbox_*")))
  assert after <= before  # every temporary directory was removed
