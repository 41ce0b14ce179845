#!/usr/bin/env python3
"""Checks a `reproduce` output folder: files exist and parse, numbers are finite and in [-1, 1].

Usage: check_results.py OUT_DIR FIG [FIG ...]
"""
import csv
import json
import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fail(msg):
    print(f"check_results: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check_fig(root: Path, fig: str) -> int:
    d = root / fig
    if not d.is_dir():
        fail(f"{d} missing")
    for name in ["config.json", "results.json", "results.csv", "summary.md"]:
        if not (d / name).is_file():
            fail(f"{d / name} missing")
    json.loads((d / "config.json").read_text())
    json.loads((d / "results.json").read_text())
    pngs = sorted(d.glob("*.png"))
    svgs = sorted(d.glob("*.svg"))
    if not pngs or not svgs:
        fail(f"{d}: no PNG or no SVG figure")
    for p in pngs:
        data = p.read_bytes()
        if not data.startswith(PNG_MAGIC) or len(data) < 1000:
            fail(f"{p} is not a real PNG")
    for s in svgs:
        ET.parse(s)
    rows = list(csv.DictReader((d / "results.csv").open()))
    if not rows:
        fail(f"{d}/results.csv has no rows")
    checked = 0
    for r in rows:
        metric = r.get("metric", "")
        if "stiffness" not in metric:
            continue
        v = float(r["value"])
        if not math.isfinite(v) or not -1.0 <= v <= 1.0:
            fail(f"{d}/results.csv: {metric} = {v} is not a finite value in [-1, 1] (row {r})")
        checked += 1
    if checked == 0:
        fail(f"{d}/results.csv has no stiffness rows")
    print(f"check_results: {fig}: {len(rows)} rows, {checked} stiffness values in [-1, 1], "
          f"{len(pngs)} PNG, {len(svgs)} SVG: ok")
    return checked


def main():
    if len(sys.argv) < 3:
        fail(__doc__)
    root = Path(sys.argv[1])
    for fig in sys.argv[2:]:
        check_fig(root, fig)
    if not (root / "index.md").is_file():
        fail(f"{root}/index.md missing")


if __name__ == "__main__":
    main()
