"""``metrics.jsonl``: one JSON record per line, written by rank 0, read back on resume."""

from __future__ import annotations

import json
import os
import warnings


def read_metrics(path: str) -> list[dict]:
    """The records of a metrics.jsonl; a line cut off by a crash (disk full, power loss) is dropped
    with a warning, since every record after the resumed checkpoint is written again anyway."""
    records, dropped = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                dropped.append(number)
    if dropped:
        warnings.warn(
            f"{path}: dropped {len(dropped)} unreadable line(s) ({', '.join(map(str, dropped[:5]))}), "
            "cut off when the run stopped; resuming without them",
            stacklevel=3,
        )
    return records


class MetricsLog:
    """metrics.jsonl writer (rank 0); on resume, drops records after the checkpoint's step; ``on_record``
    is also called with each record written."""

    def __init__(self, path: str, enabled: bool, resume_step: int | None, on_record=None):
        self.path = path
        self.on_record = on_record  # also given every record (the TensorBoard log)
        self.enabled = enabled
        self.records: list[dict] = []
        if enabled and resume_step is not None and os.path.exists(path):
            old = read_metrics(path)
            self.records = [r for r in old if r.get("step", 0) <= resume_step]
            with open(path + ".tmp", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in self.records)
            os.replace(path + ".tmp", path)
        elif enabled:
            open(path, "w").close()

    def log(self, record: dict) -> None:
        self.records.append(record)
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if self.on_record is not None:
                self.on_record(record)


def zero_flow_loss(metrics: list[dict]) -> float | None:
    """The validation L1 of the unwarped sources (the bar a learned warp has to beat), from the
    metrics.jsonl records of a run; None when the run logged none (no initial validation)."""
    zero = [m["zero_flow_loss"] for m in metrics if m.get("kind") == "val" and "zero_flow_loss" in m]
    return zero[0] if zero else None
