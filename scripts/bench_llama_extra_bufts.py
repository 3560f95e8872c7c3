"""Speed of a local model with llama.cpp's extra buffer types on and off.

    .venv/bin/python scripts/bench_llama_extra_bufts.py [--model NAME] [--rounds 3]

Each measurement runs in a fresh process (the setting is process-wide), loads the model the
way ``trouter.local.llama_launch`` does, and reports prompt-processing and generation
tokens/s of one greedy completion; rounds alternate the two settings so that a change in
machine load hits both. Also reports whether llama.cpp placed weights in a repacked
(``CPU_REPACK``) or AMX buffer, read from its load log. Bounded: ``--timeout`` per process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PROMPT = (
    "Write a Python function that returns the n-th Fibonacci number iteratively, "
    "then explain in two sentences why the iterative version is faster than the naive "
    "recursive one. " * 4
)


def measure(model_path: str, extra_bufts: bool, threads: int, max_tokens: int) -> dict:
    """One process's measurement (run by the child)."""
    import llama_cpp

    from trouter.local.llama_launch import set_default_extra_bufts

    set_default_extra_bufts(extra_bufts)
    started = time.perf_counter()
    llm = llama_cpp.Llama(model_path, n_ctx=1024, n_threads=threads, verbose=True, seed=0)
    load_s = time.perf_counter() - started
    llm.create_completion(PROMPT, max_tokens=1, temperature=0.0)  # warm-up
    llm.reset()
    llama_cpp.llama_perf_context_reset(llm.ctx)
    out = llm.create_completion(PROMPT, max_tokens=max_tokens, temperature=0.0)
    perf = llama_cpp.llama_perf_context(llm.ctx)  # llama.cpp's own timers, per phase
    return {
        "extra_bufts": extra_bufts,
        "use_extra_bufts_in_params": bool(llm.model_params.use_extra_bufts),
        "load_s": round(load_s, 2),
        "prompt_tokens": perf.n_p_eval,
        "prompt_tok_s": round(1000 * perf.n_p_eval / max(perf.t_p_eval_ms, 1e-3), 1),
        "generated_tokens": out["usage"]["completion_tokens"],
        "gen_tok_s": round(1000 * perf.n_eval / max(perf.t_eval_ms, 1e-3), 2),
    }


def child(args: argparse.Namespace) -> None:
    result = measure(args.model_path, args.extra_bufts == 1, args.threads, args.max_tokens)
    print("RESULT " + json.dumps(result), flush=True)


def run_one(args: argparse.Namespace, model_path: str, extra_bufts: bool) -> dict:
    command = [sys.executable, __file__, "--child", "--model-path", model_path,
               "--extra-bufts", str(int(extra_bufts)), "--threads", str(args.threads),
               "--max-tokens", str(args.max_tokens)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        raise SystemExit(f"measurement process failed ({done.returncode}):\n{done.stderr[-2000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    log = done.stderr
    result["repacked_buffer"] = "CPU_REPACK model buffer size" in log
    result["amx_buffer"] = "AMX model buffer size" in log
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--extra-bufts", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from trouter.local.catalogue import get_local_model
    from trouter.local.fetch import verified_path

    model_path = str(verified_path(get_local_model(args.model)))
    runs: dict[bool, list[dict]] = {True: [], False: []}
    for round_number in range(args.rounds):
        order = (True, False) if round_number % 2 == 0 else (False, True)
        for setting in order:
            result = run_one(args, model_path, setting)
            runs[setting].append(result)
            print(json.dumps(result), flush=True)
    summary = {}
    for setting, results in runs.items():
        summary["default (extra bufts on)" if setting else "use_extra_bufts=False"] = {
            "prompt_tok_s_median": statistics.median(r["prompt_tok_s"] for r in results),
            "gen_tok_s_median": statistics.median(r["gen_tok_s"] for r in results),
            "load_s_median": statistics.median(r["load_s"] for r in results),
            "repacked_buffer": results[0]["repacked_buffer"],
        }
    print(json.dumps({"model": args.model, "threads": args.threads, "rounds": args.rounds,
                      "summary": summary}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
