"""A markdown table from a pytest-benchmark JSON file: one row per benchmark, grouped.

    python benchmarks/gpu_report.py BENCH.json

Columns: median and minimum in ms, the speed-up over the eager reference and over
torch.compile(reference) of the same group (ratios of medians), GB/s against the minimal bytes,
and that as a fraction of the run's measured copy bandwidth. Used by benchmarks/gpu_check.sh;
works for CPU runs too.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def provider_of(bench: dict) -> str:
    params = bench.get("params") or {}
    return params.get("provider") or params.get("backend_kind") or bench["name"]


def markdown(report: dict) -> str:
    groups: dict[str, list[dict]] = defaultdict(list)
    for bench in report["benchmarks"]:
        groups[bench["group"] or bench["name"]].append(bench)
    lines = [
        "| group | provider | median ms | min ms | vs eager | vs compile | GB/s | of copy |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for group, benches in groups.items():
        medians = {provider_of(b): b["stats"]["median"] for b in benches}
        eager, compiled = medians.get("reference"), medians.get("compiled_reference")
        for b in benches:
            median, info = b["stats"]["median"], b.get("extra_info", {})
            ratio = lambda base, median=median: f"{base / median:.2f}x" if base else "-"
            share = info.get("fraction_of_copy")
            lines.append(
                f"| {group} | {provider_of(b)} | {median * 1e3:.3f} | {b['stats']['min'] * 1e3:.3f} | "
                f"{ratio(eager)} | {ratio(compiled)} | {info.get('GBps', '-')} | "
                f"{f'{100 * share:.0f} %' if share is not None else '-'} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        print(markdown(json.load(f)))
