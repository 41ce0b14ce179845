#!/usr/bin/env python3
"""Checks that two `reproduce` output folders hold the same results, byte for byte, apart from
what measures the machine rather than the model: wall times and the command line.

Every file must exist in both folders. Timing fields, the only ones allowed to differ:
  * JSON: keys ending in `_seconds` (gram_seconds, train_seconds, ...) and `command`;
  * Markdown: the `Command:` line and table columns headed `... s` (train s, measure s).
Everything else (results.csv, results.json's numbers, figures, run records) must be identical.
CSV files are compared as bytes: a timing column there would have to be listed here first.

Usage: same_results.py DIR_A DIR_B
"""
import json
import re
import sys
from pathlib import Path


def fail(msg):
    print(f"same_results: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def is_timing_key(k):
    return k.endswith("_seconds") or k == "command"


def strip_json(v):
    if isinstance(v, dict):
        return {k: strip_json(x) for k, x in v.items() if not is_timing_key(k)}
    if isinstance(v, list):
        return [strip_json(x) for x in v]
    return v


TIMING_HEADER = re.compile(r"(^|\s)s$")


def strip_markdown(text):
    out, drop = [], None
    for line in text.splitlines():
        if line.startswith("Command:"):
            continue
        if line.startswith("|"):
            cells = line.strip().strip("|").split("|")
            if drop is None:  # a table's header row
                drop = {i for i, c in enumerate(cells) if TIMING_HEADER.search(c.strip())}
            out.append("|".join(c for i, c in enumerate(cells) if i not in drop))
        else:
            drop = None
            out.append(line)
    return "\n".join(out)


def files(root):
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


def main():
    if len(sys.argv) != 3:
        fail(__doc__.strip().splitlines()[-1])
    a, b = Path(sys.argv[1]), Path(sys.argv[2])
    fa, fb = files(a), files(b)
    if not fa:
        fail(f"{a} holds no files")
    if fa != fb:
        fail(f"different file sets: only in {a}: {sorted(map(str, fa - fb))}, only in {b}: {sorted(map(str, fb - fa))}")
    for rel in sorted(fa):
        x, y = a / rel, b / rel
        if rel.suffix == ".json":
            same = strip_json(json.loads(x.read_text())) == strip_json(json.loads(y.read_text()))
        elif rel.suffix == ".md":
            same = strip_markdown(x.read_text()) == strip_markdown(y.read_text())
        else:
            same = x.read_bytes() == y.read_bytes()
        if not same:
            fail(f"{x} and {y} differ (beyond timing fields)")
    print(f"same_results: {len(fa)} files identical apart from timing fields ({a} vs {b})")


if __name__ == "__main__":
    main()
