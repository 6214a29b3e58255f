"""lm-evaluation-harness task configs (package data) for `liar eval zeroshot`; see liar/zeroshot.py."""
