#!/usr/bin/env python3
"""Checks a `reproduce` output folder: files exist and parse, numbers are finite and in [-1, 1];
plus cheap scientific checks on Figs 8-10: within-class stiffness above between-class at every
measured Fig 8 point (every seed's window mean), Fig 4 (permuted labels) never gives a
between-class lower bound above 0, and every trend verdict carries its test
(statistic and p-value) or is "inconclusive". Figs 2-5: every aggregated value is a mean over the
figure's seeds with a Student-t interval across them (a bootstrap one with a single seed) that
holds its mean; Figs 3 and 5: within-class stiffness is positive at initialisation.

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


VERDICTS = {"supports v1", "supports v2/v3", "inconclusive"}
DEPTH_VERDICTS = {"supports the paper", "contradicts the paper", "inconclusive"}


def check_test(where, trend, labels):
    verdict = trend.get("verdict")
    if verdict not in labels:
        fail(f"{where}: verdict {verdict!r} is not one of {sorted(labels)}")
    test = trend.get("test")
    if test is None:
        if verdict != "inconclusive":
            fail(f"{where}: verdict {verdict!r} without a test")
        return 0
    p = test.get("p_value")
    stat = test.get("statistic")
    if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0 and isinstance(stat, (int, float))
            and math.isfinite(stat)):
        fail(f"{where}: test without a valid statistic and p-value: {test}")
    if verdict != "inconclusive" and p >= test.get("alpha", 0.05):
        fail(f"{where}: verdict {verdict!r} with p = {p}")
    return 1


def check_across(where, a, seeds):
    """One value aggregated over the seeds (dynamics figures)."""
    if a is None:
        fail(f"{where}: missing")
    n, mean, ci = a.get("n"), a.get("mean"), a.get("ci")
    if not (isinstance(n, int) and 1 <= n <= seeds and len(a.get("values", [])) == n):
        fail(f"{where}: {n} values for {seeds} seeds: {a}")
    if not math.isclose(mean, sum(a["values"]) / n, rel_tol=1e-9, abs_tol=1e-12):
        fail(f"{where}: mean {mean} is not the mean of its seed values {a['values']}")
    want = "student_t_across_seeds" if n >= 2 else ("bootstrap_over_examples" if seeds == 1 else "none")
    if ci is not None and a.get("interval") != want:
        fail(f"{where}: interval {a.get('interval')!r} with {n} of {seeds} seeds (expected {want!r})")
    if seeds >= 2 and n >= 2 and ci is None:
        fail(f"{where}: no interval across {n} seeds")
    if ci is not None and not ci[0] <= mean <= ci[1]:
        fail(f"{where}: interval {ci} does not hold the mean {mean}")


def check_dynamics(fig, res):
    """Figs 2-5: the values reported are aggregated over all the figure's seeds."""
    seeds = res.get("seeds")
    runs = res.get("runs", [])
    if not isinstance(seeds, int) or seeds != len(runs) or seeds < 1:
        fail(f"{fig}: seeds = {seeds!r} but {len(runs)} runs")
    values = 0
    for p in res.get("over_training", []):
        for k in ["sign_within", "sign_between", "cosine_within", "cosine_between"]:
            if p.get(k) is not None:
                check_across(f"{fig} step {p['step']} {k}", p[k], seeds)
                values += 1
    for c in res.get("claims", []):
        for k in ["within_at_init", "between_growth", "within_change", "between_change", "between_at_end"]:
            check_across(f"{fig} claim {c['kind']} {k}", c.get(k), seeds)
            values += 1
    for f in res.get("fall_back") or []:
        for k in ["at_onset", "at_end", "change"]:
            check_across(f"{fig} fall-back {f['kind']} {f['which']} {k}", f.get(k), seeds)
            values += 1
    if values == 0:
        fail(f"{fig}: no value aggregated over seeds")
    print(f"check_results: {fig}: {values} values aggregated over {seeds} seeds: ok")


def check_science(root: Path, fig: str):
    res = json.loads((root / fig / "results.json").read_text())
    base = fig.split("-")[0]
    tested = 0
    if base in ("fig2", "fig3", "fig4", "fig5"):
        check_dynamics(fig, res)
    if base in ("fig3", "fig5"):
        for c in res.get("claims", []):
            if c.get("within_positive_at_init") is not True:
                fail(f"{fig}: within-class {c['kind']} stiffness at initialisation is not significantly positive "
                     f"({c['within_at_init']})")
        print(f"check_results: {fig}: within-class stiffness positive at init in {len(res['claims'])} claims: ok")
    if base == "fig8":
        points = 0
        for c in res["cells"]:
            b, w = c.get("between"), c.get("within")
            if not b or not w:
                continue
            if len(b["values"]) == len(w["values"]):
                for bv, wv in zip(b["values"], w["values"]):
                    if not wv > bv:
                        fail(f"{fig}: within-class {wv} not above between-class {bv} in cell {c['dataset']} "
                             f"{c['kind']} loss<{c['threshold']} lr {c['lr']}")
                    points += 1
            elif not w["mean"] > b["mean"]:
                fail(f"{fig}: within-class mean not above between-class in cell {c}")
        if points == 0:
            fail(f"{fig}: no measured point to compare within- and between-class stiffness")
        for t in res["trends"]:
            tested += check_test(f"{fig} trend {t['dataset']} {t['kind']} {t['threshold']}", t, VERDICTS)
        print(f"check_results: {fig}: within > between at {points} seed points; "
              f"{len(res['trends'])} verdicts, {tested} with a test: ok")
    elif base == "fig10":
        for t in res["trends"]:
            tested += check_test(f"{fig} trend {t['dataset']} {t['method']} {t['space']}", t, VERDICTS)
        print(f"check_results: {fig}: {len(res['trends'])} verdicts, {tested} with a test: ok")
    elif base == "fig4":
        # Permuted training labels: no between-class lower bound above 0 after initialisation,
        # decided on the interval across seeds.
        claims = [c for c in res.get("claims", []) if c]
        if not claims:
            fail(f"{fig}: no claims")
        for c in claims:
            if c.get("positive_between_develops") is True:
                fail(f"{fig}: permuted labels gave a between-class lower bound above 0 "
                     f"({c['kind']}, largest {c.get('max_between_after_init')}, lower bound {c.get('max_between_ci_lo')})")
        print(f"check_results: {fig}: no positive between-class lower bound in {len(claims)} claims: ok")
    elif base == "fig9":
        for t in res["depth_trends"]:
            tested += check_test(f"{fig} depth trend {t['scope']} {t['method']}", t, DEPTH_VERDICTS)
        print(f"check_results: {fig}: {len(res['depth_trends'])} depth verdicts, {tested} with a test: ok")


def main():
    if len(sys.argv) < 3:
        fail(__doc__)
    root = Path(sys.argv[1])
    for fig in sys.argv[2:]:
        check_fig(root, fig)
        check_science(root, fig)
    if not (root / "index.md").is_file():
        fail(f"{root}/index.md missing")


if __name__ == "__main__":
    main()
