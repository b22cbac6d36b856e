"""What a batch run gives back: an `ItemResult` per input (what the report records for it),
the `BatchResult`, and the interrupts (Ctrl-C) that carry the results so far.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ItemResult:
    input: str
    name: str
    status: str = "pending"  # ok | failed | interrupted | not-run
    error: str | None = None
    traceback: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stages: dict[str, dict] = field(default_factory=dict)
    """Metadata each stage returned (e.g. which weights, steps run, resumed from)."""
    computed_seconds: dict[str, float | None] = field(default_factory=dict)
    """Seconds each stage took when it was computed: in this run, or for a cached stage in the run
    that computed it (None for caches written before o3d recorded it). `timings` is this run's."""


@dataclass
class BatchResult:
    items: list[ItemResult]
    report_path: Path

    @property
    def ok(self) -> bool:
        return all(r.status == "ok" for r in self.items)

    @property
    def computed_stages(self) -> int:
        return sum(len(r.timings) - len(r.cached) for r in self.items)


class ItemInterrupted(KeyboardInterrupt):
    """Ctrl-C while an item ran; carries that item's result (status "interrupted", its finished stages)."""

    def __init__(self, result: ItemResult):
        super().__init__()
        self.result = result


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch; carries the partial result (the report is written)."""

    def __init__(self, result: BatchResult):
        super().__init__()
        self.result = result
