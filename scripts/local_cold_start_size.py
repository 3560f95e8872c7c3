"""Run the local cold-start experiment at a custom size against already-running servers.

Usage: python scripts/local_cold_start_size.py POOL_YAML OUT_DIR N_LEAVES PER_LEAF PER_CALL
N_GSM8K N_HUMANEVAL. With a pool YAML whose ``api_base`` values match earlier runs, every
call already made is answered from the LLM cache, so re-cutting the sizes of finished runs
(e.g. more real test questions over the same synthetic labels) costs only the training.
"""

from __future__ import annotations

import sys

from trouter.local.experiment import Size, run_cold_start
from trouter.local.pool import make_client, resolve_pool


def main(argv: list[str]) -> None:
    pool_path, out, *numbers = argv
    n_leaves, per_leaf, per_call, n_gsm8k, n_humaneval = (int(x) for x in numbers)
    size = Size(n_leaves, per_leaf, per_call, n_gsm8k, n_humaneval, (0, 1, 2))
    with resolve_pool(pool_path) as pool:
        result = run_cold_start(size, out, pool, make_client(pool))
    print(f"stage seconds: {result['stage_seconds']}; table in {out}/table.md")


if __name__ == "__main__":
    if len(sys.argv) != 8:
        sys.exit(__doc__)
    main(sys.argv[1:])
