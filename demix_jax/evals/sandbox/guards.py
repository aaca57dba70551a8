"""Best-effort in-process guards: the only layer of the "none_unsafe" mode.

`PRELUDE` runs in the program's process before the program (so the program
can undo all of it: this is not isolation). It refuses fork/exec/spawn/
kill/setsid and subprocess, multiprocessing, ctypes and socket, and writing,
creating, removing or renaming anything outside the working directory. A
refused call raises `PermissionError` and writes "sandbox: blocked <what>"
to stderr; the runner then fails the program even if it caught the error.
Under "bwrap" the kernel enforces all of this and more, and this prelude is
not used.
"""

PRELUDE = r"""
import os, sys
HOME = os.path.realpath(os.getcwd())
VIOLATIONS = []

def _violation(what):
  VIOLATIONS.append(what)
  os.write(2, ("sandbox: blocked " + what + "\n").encode())
  raise PermissionError("sandbox: " + what + " is not allowed")

def _inside(path, dir_fd=None):
  if dir_fd is not None:
    return False
  try:
    p = os.fsdecode(path) if not isinstance(path, int) else None
  except TypeError:
    return False
  if p is None:
    return True  # an already open fd
  real = os.path.realpath(p)
  if real == os.devnull:
    return True
  return real == HOME or real.startswith(HOME + os.sep)

def _refuse(name):
  return lambda *a, **k: _violation(name)

import builtins, io, posix
_open, _os_open = builtins.open, os.open
def _guarded_open(file, mode="r", *a, **k):
  if any(c in mode for c in "wax+") and not _inside(file):
    _violation("write to " + repr(file))
  return _open(file, mode, *a, **k)
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
def _guarded_os_open(path, flags, *a, dir_fd=None, **k):
  if flags & _WRITE and not _inside(path, dir_fd):
    _violation("write to " + repr(path))
  return _os_open(path, flags, *a, dir_fd=dir_fd, **k)
builtins.open = io.open = _guarded_open
os.open = posix.open = _guarded_os_open

def _path_guard(name, fn, nargs=1):
  def guarded(*a, **k):
    paths = a[:nargs]
    if any(not _inside(p, k.get("dir_fd") or k.get("src_dir_fd")
                        or k.get("dst_dir_fd")) for p in paths):
      _violation(name + " of " + repr(paths))
    return fn(*a, **k)
  return guarded
for name, nargs in (("remove", 1), ("unlink", 1), ("rmdir", 1), ("mkdir", 1),
                    ("rename", 2), ("replace", 2), ("symlink", 2),
                    ("link", 2), ("chmod", 1), ("chown", 1),
                    ("truncate", 1), ("utime", 1), ("mkfifo", 1)):
  if hasattr(os, name):
    g = _path_guard(name, getattr(os, name), nargs)
    setattr(os, name, g)
    setattr(posix, name, g)
for name in ("fork", "forkpty", "vfork", "system", "popen", "execv",
             "execve", "execl", "execle", "execlp", "execlpe", "execvp",
             "execvpe", "spawnv", "spawnve", "spawnl", "spawnle", "spawnlp",
             "spawnlpe", "spawnvp", "spawnvpe", "posix_spawn",
             "posix_spawnp", "kill", "killpg", "setsid", "setpgid",
             "setuid", "setgid", "chroot"):
  for mod in (os, posix):
    if hasattr(mod, name):
      setattr(mod, name, _refuse(name))
import socket
class _NoSocket:
  def __init__(self, *a, **k):
    _violation("network (socket)")
for name in ("socket", "create_connection", "create_server", "socketpair",
             "fromfd", "getaddrinfo", "gethostbyname"):
  setattr(socket, name, _NoSocket if name == "socket" else _refuse("network"))
BLOCKED = ("subprocess", "_posixsubprocess", "multiprocessing", "ctypes",
           "_ctypes", "pty", "_socket")
class _Blocker:
  @staticmethod
  def find_spec(name, path=None, target=None):
    if name.split(".")[0] in BLOCKED:
      _violation("import of " + name)
    return None
for name in BLOCKED:
  sys.modules.pop(name, None)
sys.meta_path.insert(0, _Blocker)
del io, posix, socket, name, mod

"""
