"""Run untrusted Python (model-written code and its tests) in an isolated, limited process.

Used to grade code answers and to check that a synthetic question's reference solution
passes its own tests. Only the exit status is read: output goes to ``/dev/null``, so a
program that prints gigabytes costs the grader nothing.

Three mechanisms, the strongest that works on this machine is used (checked once per
process by running a trivial program; see docs/sandbox.md for what holds under each):

- ``bubblewrap`` (Debian package ``bubblewrap``): new network, PID, IPC and UTS namespaces;
  a read-only view of only the interpreter's folders; a size-capped tmpfs as the working
  folder; run as ``nobody`` when the grader is root (the kernel ignores RLIMIT_NPROC for
  root); the whole namespace dies with the sandbox.
- ``unshare`` (util-linux): new network and PID namespaces (and a user namespace when not
  root); the host file system stays visible with the grader's permissions.
- ``plain``: limits, a clean environment and a process group only.

Under every mechanism the child gets a minimal environment (no inherited variables, so no
API keys), resource limits (memory, CPU seconds, processes, file size, open files, no core
files), its own session, and is killed with its whole process group on return.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from trouter.config import TrouterError

MEMORY_LIMIT_BYTES = 2 * 1024**3  # address space, per process
CPU_LIMIT_S = 20  # CPU seconds, per process
PROCESS_LIMIT = 16  # processes and threads of the sandbox's user
FILE_SIZE_LIMIT_BYTES = 16 * 1024**2  # largest file it may write
OPEN_FILES_LIMIT = 64
WORKDIR_LIMIT_BYTES = 64 * 1024**2  # the tmpfs working folder (bubblewrap only)
SANDBOX_UID = 65534  # nobody: the user a root grader drops to inside bubblewrap
MECHANISMS = ("bubblewrap", "unshare", "plain")

_LIMITS = {
    "RLIMIT_AS": MEMORY_LIMIT_BYTES,
    "RLIMIT_CPU": CPU_LIMIT_S,
    "RLIMIT_NPROC": PROCESS_LIMIT,
    "RLIMIT_FSIZE": FILE_SIZE_LIMIT_BYTES,
    "RLIMIT_NOFILE": OPEN_FILES_LIMIT,
    "RLIMIT_CORE": 0,
}

# Runs first inside the sandbox (a fresh, single-threaded interpreter, so no preexec_fn in
# the grader's threads): sets the limits, inside any user namespace so that RLIMIT_NPROC
# counts only the sandbox's processes; drops root; then execs the program in a clean
# interpreter. Hard limits are lowered too, so the program cannot raise them again.
_BOOTSTRAP = """\
import os, resource, sys
limits, drop, program = sys.argv[1:4]
for pair in limits.split(","):
    name, value = pair.split("=")
    resource.setrlimit(getattr(resource, name), (int(value), int(value)))
if drop != "-":
    os.setgroups([])
    os.setgid(int(drop))
    os.setuid(int(drop))
os.execv(sys.executable, [sys.executable, "-I", program])
"""
_WORKDIR_IN_BWRAP = "/sandbox"
_PROGRAM_IN_BWRAP = "/program/main.py"


class SandboxError(TrouterError):
    """The sandbox itself could not run a program (not: the program failed)."""


def _clean_env(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
            "LANG": "C.UTF-8"}  # fmt: skip


def _limits_arg() -> str:
    return ",".join(f"{name}={value}" for name, value in _LIMITS.items())


def _python_dirs() -> list[str]:
    """The folders the interpreter (and a virtual environment around it) lives in."""
    found = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable))}  # fmt: skip
    found = {os.path.realpath(d) for d in found if d} | {d for d in found if d}
    outside = sorted(d for d in found if not d.startswith("/usr/"))
    return [d for d in outside if not any(d.startswith(o + "/") for o in outside)]


def _parents(folders: list[str]) -> list[str]:
    """The folders above ``folders``, top first (bubblewrap would create them mode 0700)."""
    above = {str(p) for f in folders for p in Path(f).parents if str(p) != "/"}
    return sorted(above, key=lambda p: (p.count("/"), p))


def _bwrap_command(program: Path) -> list[str]:
    root = os.geteuid() == 0
    if root:  # no user namespace: the bootstrap drops to nobody so RLIMIT_NPROC applies
        spaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                  "--unshare-cgroup-try", "--cap-add", "CAP_SETUID",
                  "--cap-add", "CAP_SETGID"]  # fmt: skip
    else:
        spaces = ["--unshare-all"]  # includes a user namespace and the network
    command = ["bwrap", *spaces, "--die-with-parent", "--new-session", "--clearenv"]
    for name, value in _clean_env(_WORKDIR_IN_BWRAP).items():
        command += ["--setenv", name, value]
    command += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/lib", "/lib64", "/sbin"):
        if os.path.islink(top):
            command += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            command += ["--ro-bind", top, top]
    command += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    folders = _python_dirs()
    for parent in _parents(folders):
        command += ["--perms", "0755", "--dir", parent]
    for folder in folders:
        command += ["--ro-bind", folder, folder]
    command += ["--proc", "/proc", "--dev", "/dev"]
    command += ["--perms", "1777", "--size", str(WORKDIR_LIMIT_BYTES), "--tmpfs", _WORKDIR_IN_BWRAP]
    command += ["--perms", "0755", "--dir", os.path.dirname(_PROGRAM_IN_BWRAP)]
    command += ["--ro-bind", str(program), _PROGRAM_IN_BWRAP, "--chdir", _WORKDIR_IN_BWRAP]
    drop = str(SANDBOX_UID) if root else "-"
    return [*command, sys.executable, "-I", "-c", _BOOTSTRAP, _limits_arg(), drop,
            _PROGRAM_IN_BWRAP]  # fmt: skip


def _command(mechanism: str, program: Path) -> tuple[list[str], str]:
    """(argv, working folder on the host) for running ``program`` under ``mechanism``."""
    workdir = str(program.parent)
    bootstrap = [sys.executable, "-I", "-c", _BOOTSTRAP, _limits_arg(), "-", str(program)]
    if mechanism == "bubblewrap":
        return _bwrap_command(program), workdir
    if mechanism == "unshare":
        # --kill-child: the namespace's first process dies with unshare, and all others with it
        spaces = ["--net", "--pid", "--fork", "--kill-child", "--ipc", "--uts"]
        if os.geteuid() != 0:
            spaces += ["--user", "--map-root-user"]
        return ["unshare", *spaces, *bootstrap], workdir
    if mechanism == "plain":
        return bootstrap, workdir
    raise ValueError(f"unknown sandbox mechanism {mechanism!r}; choose from {MECHANISMS}")


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the sandbox's process group (bubblewrap/unshare take their namespace along)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_program(program: str, timeout_s: float, mechanism: str) -> int | None:
    """Exit status of ``program`` run under ``mechanism``; None when it ran past ``timeout_s``.

    Raises :class:`SandboxError` only when the sandbox itself cannot start.
    """
    if "\x00" in program:
        return 1  # Python refuses source with a NUL byte; so would the grader's run
    hostdir = Path(tempfile.mkdtemp(prefix="trouter-sandbox-"))
    try:
        os.chmod(hostdir, 0o755)  # readable by the unprivileged sandbox user
        path = hostdir / "main.py"
        path.write_text(program, encoding="utf-8", errors="surrogatepass")
        path.chmod(0o644)
        argv, cwd = _command(mechanism, path)
        env = _clean_env(cwd)
        try:
            process = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
            )  # fmt: skip
        except OSError as err:
            raise SandboxError(f"cannot start the {mechanism} sandbox: {err}") from None
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        finally:
            _kill_group(process)
    except (OSError, UnicodeError) as err:
        raise SandboxError(f"sandbox working folder {hostdir}: {err}") from None
    finally:
        shutil.rmtree(hostdir, ignore_errors=True)


@functools.cache
def mechanism() -> str:
    """The strongest mechanism that runs a trivial program here (checked once per process).

    ``TROUTER_SANDBOX`` (one of :data:`MECHANISMS`) forces one.
    """
    forced = os.environ.get("TROUTER_SANDBOX")
    if forced:
        if forced not in MECHANISMS:
            raise SandboxError(f"TROUTER_SANDBOX={forced!r}: choose from {', '.join(MECHANISMS)}")
        return forced
    found = next((m for m in MECHANISMS if works(m)), None)
    if found is None:
        raise SandboxError(f"no sandbox mechanism runs here (tried {', '.join(MECHANISMS)})")
    return found


@functools.cache
def works(name: str) -> bool:
    """Whether ``name`` can run a program that exits 0 and one that exits 3, here."""
    tool = {"bubblewrap": "bwrap", "unshare": "unshare"}.get(name)
    if tool and shutil.which(tool) is None:
        return False
    try:
        return run_program("", 30, name) == 0 and run_program("raise SystemExit(3)", 30, name) == 3
    except SandboxError:
        return False


def passes(program: str, timeout_s: float = 15.0) -> bool:
    """True when ``program`` exits with status 0 within ``timeout_s`` seconds."""
    return run_program(program, timeout_s, mechanism()) == 0


@functools.cache
def _executor() -> ThreadPoolExecutor:
    # one run per core: sandboxed programs are CPU-bound, more would only queue on the CPU
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="sandbox")


async def apasses(program: str, timeout_s: float = 15.0) -> bool:
    """:func:`passes` on a bounded thread pool, so the event loop keeps running meanwhile."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor(), passes, program, timeout_s)
