"""Run one llama.cpp model server: llama-cpp-python's app, with trouter's load options.

``python -m trouter.local.llama_launch --model PATH --alias NAME --port N ...`` serves the
same OpenAI-compatible app as ``python -m llama_cpp.server``, with one difference: it can
load the weights without llama.cpp's *extra buffer types* (``use_extra_bufts``), which
llama-cpp-python's server does not expose.

Extra buffer types are where llama.cpp repacks weights for faster CPU kernels, and on CPUs
with AMX (Intel Sapphire/Granite Rapids) where it puts Q4_K weights into the AMX buffer.
That AMX matrix-multiply path dies with a general protection fault on such CPUs
(ggml-org/llama.cpp issue 20824), so by default they are left off where ``/proc/cpuinfo``
lists ``amx_tile`` and kept elsewhere (the repacked kernels are faster; see
docs/local-models.md for the measurement). ``TROUTER_LLAMA_EXTRA_BUFTS=0|1`` overrides.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

EXTRA_BUFTS_ENV = "TROUTER_LLAMA_EXTRA_BUFTS"
CPUINFO = Path("/proc/cpuinfo")


class ExtraBuftsSettingError(ValueError):
    """``TROUTER_LLAMA_EXTRA_BUFTS`` holds something other than 0 or 1."""


def cpu_has_amx(cpuinfo: str) -> bool:
    """True when a ``flags`` line of ``/proc/cpuinfo`` text lists ``amx_tile``."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and "amx_tile" in value.split():
            return True
    return False


def extra_bufts_choice(
    environ: Mapping[str, str] | None = None, cpuinfo_path: Path = CPUINFO
) -> tuple[bool, str]:
    """(use_extra_bufts, why) for this machine: the environment override, else off on AMX."""
    environ = os.environ if environ is None else environ
    value = environ.get(EXTRA_BUFTS_ENV, "").strip()
    if value in ("0", "1"):
        return value == "1", f"{EXTRA_BUFTS_ENV}={value}"
    if value:
        raise ExtraBuftsSettingError(
            f"{EXTRA_BUFTS_ENV}={value!r}: use 1 (llama.cpp's repacked/AMX weight buffers) "
            "or 0 (plain CPU buffers), or leave it unset to decide by the CPU"
        )
    try:
        amx = cpu_has_amx(cpuinfo_path.read_text(errors="replace"))
    except OSError:
        return True, f"{cpuinfo_path} unreadable; llama.cpp's default"
    if amx:
        return False, "amx_tile in /proc/cpuinfo (llama.cpp's AMX path faults on such CPUs)"
    return True, "no AMX in /proc/cpuinfo; llama.cpp's default"


def set_default_extra_bufts(enabled: bool) -> None:
    """Make every ``llama_cpp.Llama`` this process loads use ``use_extra_bufts=enabled``.

    ``Llama.__init__`` starts from ``llama_model_default_params()`` and sets only the fields
    it has arguments for; this field has none, so the defaults are the one place to set it.
    """
    import llama_cpp.llama_cpp as bindings

    original = getattr(bindings.llama_model_default_params, "trouter_original", None)
    original = original or bindings.llama_model_default_params

    def default_params():  # type: ignore[no-untyped-def]
        params = original()
        params.use_extra_bufts = enabled
        return params

    default_params.trouter_original = original  # type: ignore[attr-defined]
    bindings.llama_model_default_params = default_params


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trouter.local.llama_launch")
    parser.add_argument("--model", required=True, help="GGUF file")
    parser.add_argument("--alias", required=True, help="Model name the API answers to")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    parser.add_argument(
        "--extra-bufts",
        choices=("0", "1", "auto"),
        default="auto",
        help=f"llama.cpp's use_extra_bufts; auto: {EXTRA_BUFTS_ENV}, else off on AMX CPUs",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.extra_bufts == "auto":
        enabled, why = extra_bufts_choice()
        print(f"trouter: use_extra_bufts={int(enabled)} ({why})", flush=True)
    else:  # trouter.local.server decided, and wrote why into the log
        enabled = args.extra_bufts == "1"

    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    set_default_extra_bufts(enabled)
    app = create_app(
        server_settings=ServerSettings(host=args.host, port=args.port),
        model_settings=[
            ModelSettings(
                model=args.model,
                model_alias=args.alias,
                n_ctx=args.n_ctx,
                n_threads=args.threads,
            )
        ],
    )
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
