"""Hostile programs against the bubblewrap sandbox, one per category.

Each program tries an attack and its trusted tests assert that the attack
worked, so a pass would mean an escape. Every test asserts the verdict is
fail AND checks on the host that the effect did not happen. The programs
use ctypes and raw syscalls where a library call would be refused early,
so what stops them is the kernel. Nothing here skips: CI installs
bubblewrap (.ci/run), and without it these tests fail.
"""

import os
import pathlib
import secrets
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from demix_jax.evals import sandbox

# The wall-clock limit is generous (a loaded machine); the tests that need
# a timeout set a short one.
LIMITS = sandbox.SandboxLimits(
    timeout_s=60.0,
    cpu_s=2,
    memory_bytes=256 << 20,
    file_bytes=1 << 20,
    scratch_bytes=4 << 20,
    workers=2,
)
REPO = pathlib.Path(__file__).resolve().parents[2]


def judge(program, tests, limits=LIMITS, **kw):
  check = sandbox.Check(
      program=textwrap.dedent(program), tests=textwrap.dedent(tests), **kw
  )
  return sandbox.run_check(check, limits)


def failed(r):
  return not r.passed and r.reason != "passed"


@pytest.fixture(scope="module", autouse=True)
def _bwrap_is_usable():
  sandbox.check_isolation(LIMITS)  # raises (no skip) when it is not


# ------------------------------------------------------------ file system
def test_cannot_write_host_tmp_or_caller_cwd(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  tag = secrets.token_hex(6)
  host_tmp = pathlib.Path("/tmp") / f"demix-hostile-{tag}"
  outside = [REPO / f"escaped-{tag}", pathlib.Path.home() / f"escaped-{tag}"]
  outside += [pathlib.Path(f"/usr/escaped-{tag}"), pathlib.Path("/escaped")]
  in_cwd = tmp_path / "escaped.txt"
  targets = [str(p) for p in [host_tmp, in_cwd, *outside]]
  r = judge(
      f"""
      import ctypes, os
      def attack():
        done = []
        for path in {targets!r}:
          for how in ("open", "os", "libc"):
            try:
              os.makedirs(os.path.dirname(path), exist_ok=True)
            except OSError:
              pass
            try:
              if how == "open":
                open(path, "w").write("x")
              elif how == "os":
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o666))
              else:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = libc.open(path.encode(), 0o101, 0o666)
                if fd < 0:
                  raise OSError(ctypes.get_errno(), "libc open")
              done.append(path)
            except OSError:
              pass
        # Under /tmp it writes its own scratch: only the rest would escape.
        return [p for p in done if not p.startswith("/tmp/")]
      """,
      "assert attack()\n",
  )
  assert failed(r), r
  for p in [host_tmp, in_cwd, *outside]:
    assert not p.exists(), p
  assert not list(tmp_path.iterdir())


def test_cannot_delete_a_file_of_the_caller(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  victim = tmp_path / "precious.txt"
  victim.write_text("keep me")
  r = judge(
      f"""
      import os, shutil
      def attack():
        for fn in (os.remove, shutil.rmtree):
          for p in ({str(victim)!r}, {str(tmp_path)!r}, "precious.txt"):
            try:
              fn(p)
              return True
            except OSError:
              pass
        return False
      """,
      "assert attack()\n",
  )
  assert failed(r), r
  assert victim.read_text() == "keep me"


def test_cannot_read_root_the_repo_or_installed_packages():
  readme = (REPO / "README.md").read_text()[:200]
  venv_file = sandbox.__file__  # this package, on the host
  r = judge(
      f"""
      import os
      def leak():
        out = []
        for p in ({str(pathlib.Path.home() / ".bashrc")!r},
                  {str(REPO / "README.md")!r},
                  {venv_file!r}, "/etc/passwd", "/etc/shadow"):
          try:
            out.append(open(p).read()[:200])
          except OSError:
            pass
        for d in ({str(pathlib.Path.home())!r}, {str(REPO.parent)!r},
                  "/home", "/run", "/var", {str(REPO)!r}):
          try:
            out.extend(os.listdir(d))
          except OSError:
            pass
        return out
      """,
      f"assert {readme!r} in leak()\n",
  )
  assert failed(r) and r.reason == "AssertionError", r


def test_scratch_is_private_and_bounded():
  r = judge(
      """
      import os
      def fill():
        # Many files, each under the file-size limit: the tmpfs size stops it.
        n = 0
        try:
          for i in range(100):
            with open(f"/tmp/f{i}", "wb") as f:
              f.write(b"x" * (512 << 10))
            n += 1
        except OSError:
          pass
        return n
      def left_by_others():
        return sorted(os.listdir("/tmp"))
      """,
      "assert left_by_others() == []\nassert fill() < 16\n",
  )
  assert r.passed, r  # the trusted tests check the bounds here


# ------------------------------------------------------------------ /proc
def test_cannot_read_the_environment_of_other_processes():
  secret = "DEMIX_SECRET_" + secrets.token_hex(8)
  holder = subprocess.Popen(
      [sys.executable, "-c", "import time; time.sleep(60)"],
      env={"DEMIX_TEST_SECRET": secret, "PATH": "/usr/bin:/bin"},
  )
  try:
    r = judge(
        f"""
        import os
        def leak():
          found = []
          pids = [{holder.pid}, {os.getpid()}, os.getppid(), 1]
          pids += [int(p) for p in os.listdir("/proc") if p.isdigit()]
          for pid in pids:
            try:
              with open(f"/proc/{{pid}}/environ", "rb") as f:
                found.append(f.read().decode("latin-1"))
            except OSError:
              pass
          return "\\n".join(found)
        def visible():
          return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        """,
        f"assert {secret!r} in leak()\n",
    )
    assert failed(r), r
    assert r.reason.startswith("AssertionError"), r
    # Only the namespace's own processes are there: bwrap's PID 1 and us.
    r = judge(
        "import os\ndef visible():\n  return os.listdir('/proc')\n",
        "pids = sorted(int(p) for p in visible() if p.isdigit())\n"
        "assert pids == [1, 2], pids\n",
    )
    assert r.passed, r
  finally:
    holder.kill()
    holder.wait()


# ---------------------------------------------------------------- network
def test_no_network_tcp_or_unix_sockets(tmp_path):
  tcp = socket.socket()
  tcp.bind(("127.0.0.1", 0))
  tcp.listen(8)
  tcp.settimeout(0.2)
  port = tcp.getsockname()[1]
  path = str(tmp_path / "host.sock")
  unix = socket.socket(socket.AF_UNIX)
  unix.bind(path)
  unix.listen(8)
  unix.settimeout(0.2)
  abstract_name = "\0demix-hostile-" + secrets.token_hex(6)
  abstract = socket.socket(socket.AF_UNIX)
  abstract.bind(abstract_name)
  abstract.listen(8)
  abstract.settimeout(0.2)
  try:
    r = judge(
        f"""
        import socket
        def attack():
          reached = []
          for fam, addr in ((socket.AF_INET, ("127.0.0.1", {port})),
                            (socket.AF_INET6, ("::1", {port})),
                            (socket.AF_UNIX, {path!r}),
                            (socket.AF_UNIX, {abstract_name!r})):
            try:
              s = socket.socket(fam)
              s.settimeout(2)
              s.connect(addr)
              s.sendall(b"hello")
              reached.append(str(addr))
            except OSError:
              pass
          for host in ("8.8.8.8", "1.1.1.1"):
            try:
              socket.create_connection((host, 53), timeout=2)
              reached.append(host)
            except OSError:
              pass
          return reached
        """,
        "assert attack()\n",
    )
    assert failed(r), r
    for srv in (tcp, unix, abstract):
      with pytest.raises(socket.timeout):
        srv.accept()
  finally:
    for srv in (tcp, unix, abstract):
      srv.close()


# -------------------------------------------------------------- processes
def _host_comms() -> set[str]:
  out = set()
  for p in os.listdir("/proc"):
    try:
      out.add(pathlib.Path(f"/proc/{p}/comm").read_text().strip())
    except OSError:
      pass
  return out


_SPAWNERS = """
import ctypes, os, subprocess, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
def name(marker):
  libc.prctl(15, marker.encode(), 0, 0, 0)  # PR_SET_NAME: the host sees it
def spawn(marker):
  made = 0
  tries = [
      lambda: os.fork(),
      lambda: libc.syscall(57),                  # raw fork (x86_64)
      lambda: libc.syscall(56, 17, 0, 0, 0, 0),  # raw clone(SIGCHLD)
      lambda: os.posix_spawn(sys.executable, [sys.executable], {}),
      lambda: subprocess.Popen(["/bin/sleep", "30"]).pid,
  ]
  for t in tries:
    try:
      pid = t()
    except OSError:
      continue
    if pid == 0:  # a child: detach, outlive the run, then act
      os.setsid()
      name(marker)
      time.sleep(5)
      open("/tmp/late", "w").write("x")
      os._exit(0)
    if pid and pid > 0:
      made += 1
  return made
"""


def test_no_process_can_be_created_or_outlive_the_run():
  marker = "dmx" + secrets.token_hex(4)
  r = judge(_SPAWNERS, f"assert spawn({marker!r}) > 0\n")
  assert failed(r), r
  time.sleep(0.5)
  assert marker not in _host_comms()


def test_a_hung_program_is_killed_with_everything_in_it():
  marker = "dmx" + secrets.token_hex(4)
  limits = sandbox.SandboxLimits(timeout_s=3.0, cpu_s=30, workers=1)
  program = _SPAWNERS + textwrap.dedent("""
      def hang(marker):
        name(marker)
        for _ in range(4):  # threads in the same process
          threading.Thread(target=time.sleep, args=(600,)).start()
        time.sleep(600)
  """)
  t0 = time.monotonic()
  r = judge(program, f"hang({marker!r})\n", limits)
  assert failed(r) and r.reason.startswith("timeout after 3s"), r
  assert time.monotonic() - t0 < 30
  time.sleep(0.5)
  assert marker not in _host_comms()


def test_signals_cannot_reach_the_caller_or_other_processes():
  bystander = subprocess.Popen(
      [sys.executable, "-c", "import time; time.sleep(60)"]
  )
  try:
    r = judge(
        f"""
        import os, signal
        def attack():
          hit = []
          # The caller, a bystander, the namespace's PID 1 and everyone.
          for pid in ({os.getpid()}, {bystander.pid}, os.getppid(), 1, -1):
            try:
              os.kill(pid, signal.SIGKILL)
              hit.append(pid)
            except OSError:
              pass
          # Signalling inside the namespace works; the host pids do not.
          return [p for p in hit if p > 2]
        """,
        "assert attack() > 0\n",
    )
    assert failed(r), r
    time.sleep(0.2)
    assert bystander.poll() is None  # still running; and so are we
  finally:
    bystander.kill()
    bystander.wait()


# -------------------------------------------------------- resource limits
def test_fork_bomb_is_stopped_quickly():
  r = judge(
      """
      import ctypes, os
      libc = ctypes.CDLL(None, use_errno=True)
      def bomb():
        n = 0
        for _ in range(10000):
          try:
            if os.fork() == 0:
              while True:
                os.fork()
            n += 1
          except OSError:
            libc.syscall(57)
        return n
      """,
      "assert bomb() > 100\n",
  )
  assert failed(r) and r.seconds < 30, r


def test_memory_hog_hits_the_address_space_limit():
  r = judge(
      """
      def hog():
        x = []
        while True:
          x.append(bytearray(10 ** 7))
      """,
      "hog()\n",
  )
  assert failed(r) and "memory" in r.reason, r


def test_huge_file_hits_the_file_size_limit():
  r = judge(
      """
      def big():
        with open("/tmp/big", "wb") as f:
          f.write(b"x" * (8 << 20))
        return True
      """,
      "assert big()\n",
  )
  assert failed(r) and "File too large" in r.reason, r


def test_cpu_loop_is_killed_by_the_cpu_limit():
  limits = sandbox.SandboxLimits(timeout_s=60.0, cpu_s=1)
  r = judge(
      """
      import signal
      signal.signal(signal.SIGXCPU, signal.SIG_IGN)  # the hard limit kills
      def spin():
        while True:
          pass
      """,
      "spin()\n",
      limits,
  )
  assert failed(r) and r.reason == "cpu time limit", r
  assert r.seconds < limits.timeout_s


def test_limits_cannot_be_raised():
  r = judge(
      """
      import ctypes, resource
      def raise_limits():
        raised = []
        for name in ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE",
                     "RLIMIT_NOFILE", "RLIMIT_NPROC"):
          res = getattr(resource, name)
          soft, hard = resource.getrlimit(res)
          try:
            resource.setrlimit(res, (resource.RLIM_INFINITY,) * 2)
            raised.append(name)
          except (ValueError, OSError):
            pass
          try:
            resource.prlimit(0, res, (resource.RLIM_INFINITY,) * 2)
            raised.append(name)
          except (ValueError, OSError):
            pass
        return raised
      def limits():
        return {n: resource.getrlimit(getattr(resource, n))
                for n in ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE")}
      """,
      f"""
      assert limits() == {{
          "RLIMIT_CPU": ({LIMITS.cpu_s}, {LIMITS.cpu_s + 1}),
          "RLIMIT_AS": ({LIMITS.memory_bytes},) * 2,
          "RLIMIT_FSIZE": ({LIMITS.file_bytes},) * 2,
      }}, limits()
      assert raise_limits()
      """,
  )
  assert failed(r) and r.reason == "AssertionError", r


# ------------------------------------------- wrong solutions made to pass
WRONG = "def add(a, b):\n  return a - b\n"
TESTS = "assert add(2, 3) == 5\nassert add(10, -1) == 9\n"


def test_the_wrong_solution_alone_fails():
  assert failed(judge(WRONG, TESTS))
  assert judge("def add(a, b):\n  return a + b\n", TESTS).passed


@pytest.mark.parametrize(
    "name, program",
    [
        (
            "object that equals everything",
            """
            class Yes:
              def __eq__(self, other): return True
              def __ne__(self, other): return False
              def __bool__(self): return True
            def add(a, b):
              return Yes()
            """,
        ),
        (
            "int subclass that equals everything",
            """
            class Yes(int):
              def __eq__(self, other): return True
            def add(a, b):
              return Yes(0)
            """,
        ),
        (
            "printed markers and fake verdicts",
            """
            import os, sys
            fake = b'{"passed": true, "reason": "passed", "died": false}\\n'
            for fd in range(64):
              try:
                os.write(fd, fake + b"DEMIX-SANDBOX-OK-" + b"0" * 32 + b"\\n")
              except OSError:
                pass
            print("passed")
            def add(a, b):
              return a - b
            """,
        ),
        ("sys.exit(0) before the tests", "import sys\nsys.exit(0)\n"),
        ("os._exit(0) before the tests", "import os\nos._exit(0)\n"),
        (
            "os._exit(0) during a call",
            "import os\ndef add(a, b):\n  os._exit(0)\n",
        ),
        (
            "SystemExit from __del__",
            """
            class Bye:
              def __del__(self):
                raise SystemExit(0)
            def add(a, b):
              Bye()
              return Bye()
            """,
        ),
        (
            "patched builtins and assert",
            """
            import builtins
            class Nothing(BaseException):
              pass
            builtins.AssertionError = Nothing
            builtins.__build_class__ = None
            builtins.isinstance = lambda *a: True
            builtins.len = lambda x: 0
            def add(a, b):
              return a - b
            """,
        ),
        (
            "a fake reply on the channel",
            """
            import os
            for fd in range(3, 64):
              try:
                os.write(fd, b'{"value": 5}\\n{"value": 9}\\n')
              except OSError:
                pass
            def add(a, b):
              return a - b
            """,
        ),
        (
            "closing the channel",
            """
            import os
            def add(a, b):
              for fd in range(64):
                try:
                  os.close(fd)
                except OSError:
                  pass
              return a + b - 1
            """,
        ),
    ],
)
def test_wrong_solutions_cannot_be_made_to_pass(name, program):
  r = judge(program, TESTS)
  assert failed(r), (name, r)


def test_the_expected_answer_is_not_reachable():
  secret = secrets.randbelow(10**12) + 10**12
  r = judge(
      """
      import os, re
      def readable():
        # Its process table and fds (pipes included), scratch, /dev.
        paths = ["/proc/" + p for p in os.listdir("/proc")]
        for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
          base = f"/proc/{pid}/"
          paths += [base + "cmdline", base + "environ"]
          try:
            paths += [base + "fd/" + fd for fd in os.listdir(base + "fd")]
          except OSError:
            pass
        for d in ("/tmp", "/dev"):
          paths += [os.path.join(d, f) for f in os.listdir(d)]
        return paths
      def find(prefix):
        for path in readable():
          try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
          except OSError:
            continue
          try:
            data = os.read(fd, 1 << 20)
          except OSError:
            data = b""
          finally:
            os.close(fd)
          m = re.search(prefix.encode() + rb"[0-9]{9}", data)
          if m:
            return int(m.group())
        return None
      """,
      "assert len(readable()) > 50\n"
      f"assert find({str(secret)[:4]!r}) == {secret}\n",
  )
  assert failed(r) and r.reason == "AssertionError", r


def test_the_program_dies_with_the_evaluator(tmp_path):
  marker = "dmx" + secrets.token_hex(4)
  program = _SPAWNERS + "def hang(m):\n  name(m)\n  time.sleep(600)\n"
  evaluator = tmp_path / "evaluator.py"
  evaluator.write_text(textwrap.dedent(f"""
      from demix_jax.evals import sandbox
      c = sandbox.Check(program={program!r}, tests="hang({marker!r})\\n")
      sandbox.run_check(c, sandbox.SandboxLimits(timeout_s=600, cpu_s=60))
  """))
  env = dict(os.environ, PYTHONPATH=str(REPO))
  proc = subprocess.Popen([sys.executable, str(evaluator)], env=env)
  try:
    deadline = time.monotonic() + 60
    while marker not in _host_comms():  # the program is running
      assert time.monotonic() < deadline and proc.poll() is None
      time.sleep(0.2)
  finally:
    proc.kill()  # SIGKILL: no cleanup code of the evaluator runs
    proc.wait()
  deadline = time.monotonic() + 10
  while marker in _host_comms() and time.monotonic() < deadline:
    time.sleep(0.2)
  assert marker not in _host_comms()
