"""Hostile programs against the code-grading sandbox, under every mechanism this machine has.

Each program tries one escape and reports through its exit status only (the sandbox reads
nothing else); the test then checks from outside that nothing got out. A threat a mechanism
does not claim to contain (docs/sandbox.md) is skipped for it, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from trouter import sandbox
from trouter.sandbox import MECHANISMS, run_program
from trouter.synthesis import graded

ROOT = os.geteuid() == 0


def _require(mechanism: str, *, contains: tuple[str, ...] = MECHANISMS) -> None:
    if not sandbox.works(mechanism):
        pytest.skip(f"the {mechanism} sandbox does not run on this machine")
    if mechanism not in contains:
        pytest.skip(f"the {mechanism} sandbox does not claim to contain this (docs/sandbox.md)")


def _marked_processes(marker: str) -> list[int]:
    """Host pids whose command line carries ``marker`` (children in namespaces included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _kill_marked(marker: str) -> None:
    for pid in _marked_processes(marker):
        with contextlib.suppress(OSError):
            os.kill(pid, 9)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """Sandbox folders go under this test's own tmp folder, so leftovers can be counted."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_exit_status_is_the_only_verdict(mechanism):
    _require(mechanism)
    assert run_program("assert sorted([3, 1, 2]) == [1, 2, 3]", 10, mechanism) == 0
    assert run_program("assert 1 == 2", 10, mechanism) == 1
    assert run_program("raise SystemExit(7)", 10, mechanism) == 7
    assert run_program("def f(:\n", 10, mechanism) == 1  # a syntax error fails, no raise
    assert run_program("x = 1\x00", 10, mechanism) == 1


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_no_inherited_environment(mechanism, monkeypatch):
    _require(mechanism)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-TESTSECRET-0123456789")
    program = textwrap.dedent("""
        import os, sys
        leaked = [k for k, v in os.environ.items() if "TESTSECRET" in v or k.endswith("_KEY")]
        allowed = {"PATH", "HOME", "TMPDIR", "LANG", "LC_CTYPE", "PWD"}
        sys.exit(10 if leaked else 11 if set(os.environ) - allowed else 0)
    """)
    assert run_program(program, 10, mechanism) == 0


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_cannot_write_outside_its_folder(mechanism, tmp_path):
    _require(mechanism, contains=("bubblewrap",))
    target = tmp_path / "escaped.txt"
    program = f"open({str(target)!r}, 'w').write('out')"
    assert run_program(program, 10, mechanism) != 0
    assert not target.exists()


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_no_network_even_to_loopback(mechanism, monkeypatch):
    _require(mechanism, contains=("bubblewrap", "unshare"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-TESTSECRET-0123456789")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    received: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                received.append(conn.recv(1024) or b"<connected>")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    program = textwrap.dedent(f"""
        import os, socket
        with socket.create_connection(("127.0.0.1", {port}), timeout=3) as s:
            s.sendall(os.environ.get("OPENAI_API_KEY", "no key").encode())
    """)
    try:
        assert run_program(program, 10, mechanism) != 0
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(5)
        listener.close()
    assert received == []


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_fork_bomb_is_capped_and_reaped(mechanism):
    # bounded to 200 forks so that an uncontained run cannot hurt the machine
    if ROOT and mechanism != "bubblewrap":
        pytest.skip("the kernel does not apply RLIMIT_NPROC to root outside bubblewrap")
    _require(mechanism)
    marker = f"forkbomb-{uuid.uuid4().hex}"
    program = textwrap.dedent(f"""
        import os, sys
        made = 0
        for _ in range(200):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:  # a sleeper whose command line the test can find
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)",
                                          {marker!r}])
            made += 1
        sys.exit(min(made, 250))
    """)
    try:
        status = run_program(program, 20, mechanism)
        assert status is not None and status < sandbox.PROCESS_LIMIT
        time.sleep(0.3)
        assert _live(_marked_processes(marker)) == []
    finally:
        _kill_marked(marker)


def _live(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


DETACHED = """
import os, subprocess, sys, time
child = '''
import time
while True:
    try:
        open("spill-%d" % time.time_ns(), "w").write("x")
    except OSError:
        pass
    time.sleep(0.01)
'''
subprocess.Popen([sys.executable, "-c", child, {marker!r}], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.5)
"""


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_detached_child_does_not_outlive_the_grade(mechanism, private_tmp):
    _require(mechanism, contains=("bubblewrap", "unshare"))
    marker = f"detached-{uuid.uuid4().hex}"
    try:
        assert run_program(DETACHED.format(marker=marker), 10, mechanism) == 0
        time.sleep(0.5)
        assert _live(_marked_processes(marker)) == []
        assert list(private_tmp.iterdir()) == []  # its folder is gone too
    finally:
        _kill_marked(marker)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_a_child_writing_into_the_folder_never_makes_cleanup_raise(mechanism, private_tmp):
    # where the child is not contained (plain), cleanup must still return without raising
    _require(mechanism)
    marker = f"spill-{uuid.uuid4().hex}"
    try:
        for _ in range(3):
            assert run_program(DETACHED.format(marker=marker), 10, mechanism) == 0
    finally:
        _kill_marked(marker)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_output_flood_goes_nowhere(mechanism):
    _require(mechanism)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    program = textwrap.dedent("""
        import sys
        block = b"x" * (1 << 20)
        for _ in range(1500):
            sys.stdout.buffer.write(block)
            sys.stderr.buffer.write(block[:1000])
    """)
    assert run_program(program, 30, mechanism) == 0
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 50  # 1.5 GB printed; buffering any of it would show here


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_disk_flood_stops_at_the_file_size_limit(mechanism, private_tmp):
    _require(mechanism)
    program = textwrap.dedent("""
        block = b"x" * (1 << 20)
        with open("big", "wb") as f:
            for _ in range(200):
                f.write(block)
    """)
    assert run_program(program, 20, mechanism) != 0  # SIGXFSZ at 16 MiB
    assert list(private_tmp.iterdir()) == []


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_many_files_fill_only_the_capped_working_folder(mechanism):
    _require(mechanism, contains=("bubblewrap",))
    program = textwrap.dedent("""
        import sys
        block = b"x" * (1 << 20)
        try:
            for i in range(20):
                with open(f"part{i}", "wb") as f:
                    for _ in range(15):
                        f.write(block)
        except OSError:
            sys.exit(3)  # ENOSPC: the 64 MiB tmpfs is full
    """)
    assert run_program(program, 20, mechanism) == 3


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_memory_is_capped(mechanism):
    _require(mechanism)
    program = "try:\n    x = bytearray(4 * 1024**3)\nexcept MemoryError:\n    raise SystemExit(4)"
    assert run_program(program, 20, mechanism) == 4


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_cpu_spin_is_stopped_at_the_timeout(mechanism):
    _require(mechanism)
    marker = f"spin-{uuid.uuid4().hex}"
    start = time.monotonic()
    try:
        program = (
            "import os, sys\n"
            f"os.execv(sys.executable, [sys.executable, '-c', 'while True: pass', {marker!r}])"
        )
        assert run_program(program, 2, mechanism) is None
        assert time.monotonic() - start < 5
        time.sleep(0.3)
        assert _live(_marked_processes(marker)) == []
    finally:
        _kill_marked(marker)


def test_the_strongest_working_mechanism_is_chosen():
    first = next(m for m in MECHANISMS if sandbox.works(m))
    assert sandbox.mechanism() == first or os.environ.get("TROUTER_SANDBOX")


SPIN_ITEM = {
    "question": "Write f.",
    "function_name": "f",
    "solution": "def f():\n    while True:\n        pass",
    "tests": ["assert f() == 1", "assert f() == 1"],
}


def test_spinning_reference_solutions_do_not_block_the_event_loop(monkeypatch):
    monkeypatch.setattr(graded, "SOLUTION_TIMEOUT_S", 2.0)
    gaps: list[float] = []

    async def main() -> list:
        async def tick() -> None:
            last = time.monotonic()
            for _ in range(20):
                await asyncio.sleep(0.05)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        items, _ = await asyncio.gather(
            graded.aparse_items({"items": [SPIN_ITEM, SPIN_ITEM]}, "code"), tick()
        )
        return items

    assert asyncio.run(main()) == []
    assert max(gaps) < 0.5


def test_a_sandbox_failure_drops_the_item_instead_of_aborting(monkeypatch):
    def broken(program: str, timeout_s: float = 15.0) -> bool:
        raise sandbox.SandboxError("cannot start the sandbox: out of processes")

    monkeypatch.setattr(graded, "passes", broken)
    good = dict(SPIN_ITEM, solution="def f():\n    return 1")
    assert graded.parse_items({"items": [good]}, "code") == []
    monkeypatch.setattr(sandbox, "passes", broken)
    assert asyncio.run(graded.aparse_items({"items": [good]}, "code")) == []
