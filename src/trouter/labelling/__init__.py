"""Labelling: pool models answer synthetic questions, a judge scores them (resumable JSONL)."""

from trouter.labelling.judge import VerdictError, parse_verdict

__all__ = ["VerdictError", "parse_verdict"]
