"""Run untrusted Python (model-written code and its tests) in a separate, limited process.

Used to grade code answers and to check that a synthetic question's reference solution
passes its own tests. The child runs isolated (``-I``: no user site, no PYTHON* variables)
in an empty temporary folder, with address-space and CPU-time limits and a wall timeout;
only its exit status is read.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile

MEMORY_LIMIT_BYTES = 2 * 1024**3
CPU_LIMIT_S = 20


def _limit_resources() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT_S, CPU_LIMIT_S))


def passes(program: str, timeout_s: float = 15.0) -> bool:
    """True when ``program`` exits with status 0 within ``timeout_s`` seconds."""
    with tempfile.TemporaryDirectory(prefix="trouter-sandbox-") as workdir:
        try:
            result = subprocess.run(
                [sys.executable, "-I", "-c", program],
                cwd=workdir,
                capture_output=True,
                timeout=timeout_s,
                preexec_fn=_limit_resources,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return False
        except ValueError:  # a NUL byte in model-written code cannot be passed as an argument
            return False
    return result.returncode == 0
