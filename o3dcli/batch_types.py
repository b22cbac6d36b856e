"""The batch runner's types (o3dcli.pipeline runs the batch):
- what a stage is: a `Stage` (its name, version, the config it depends on, the files it
  publishes), the `StageContext` it runs with, and `StageWarnings`, which keeps the warnings
  logged while it runs for the item they are about (the stages of `o3d generate` are in
  o3dcli.stages);
- what a batch run gives back: an `ItemResult` per input (what the report records for it),
  the `BatchResult`, and the interrupts (Ctrl-C) that carry the results so far.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from o3dcli.cache import StateStore
from o3dcli.config import Config
from o3dcli.naming import Item


@dataclass
class StageContext:
    item: Item
    config: Config
    work_dir: Path
    upstream: dict[str, Path]
    state: StateStore
    input_sha256: str
    device: str
    progress: Callable[[str], None] = lambda text: None
    meta: dict[str, dict] = field(default_factory=dict)
    """Metadata returned by the upstream stages, by stage name."""
    resources: dict[str, Any] = field(default_factory=dict)
    """Shared by all items of a batch (e.g. the loaded models, built once)."""


@dataclass(frozen=True)
class Stage:
    name: str
    """Stage name: a cache folder prefix, so use letters and underscores only."""
    version: int
    """Bump when the stage's output format or algorithm changes: old cache entries stop matching."""
    sections: tuple[str, ...]
    """Config sections ("mesh") or single fields ("mesh.target_faces") whose values go into the key."""
    run: Callable[[StageContext], dict[str, Any]]
    publish: dict[str, str] = field(default_factory=dict)
    """Files of the stage folder copied into the asset folder: {cache file: asset file}."""
    files: Callable[[Config], dict[str, Path]] | None = None
    """Files the stage reads besides the input (e.g. model weights), {role: path}: their contents'
    hashes go into the key, so new weights at the same path are not answered from the cache."""
    side_fields: tuple[str, ...] = ()
    """Fields of `sections` that change only what the stage writes beside its result (e.g.
    diffusion.save_intermediate): in the key of its own cache entry, not in the key its
    downstream stages are made from, so that they are shared by both values."""
    key_extra: Callable[[Config], dict[str, Any]] | None = None
    """What else decides the stage's output, {name: value} (e.g. a setting that matters only for one
    format, or whether an optional library is installed): added to the key when not empty."""
    per_item: bool = False
    """Its output carries the item's name (the export names its object and material after the
    asset): the name goes into the key, so an item made from the same image under another name
    does not take this one's entry."""


class StageWarnings(logging.Filter):
    """Warnings o3d logs while a stage runs, kept for the item (its report, and the line printed
    with it; the cache keeps them with the stage, so a cached stage still tells them) instead of
    going to the console on their own. Paths in the stage's work folder are given as the asset
    folder's, where its files are published: {work folder: asset folder}."""

    def __init__(self, paths: dict[str, str]):
        super().__init__()
        self.paths = paths
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:  # errors (and info) are shown as they come
            return True
        text = record.getMessage()
        for work, asset in self.paths.items():
            text = text.replace(work, asset)
        if text not in self.messages:
            self.messages.append(text)
        return False


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
    stage: str | None = None
    """The stage a failed item failed in (None when it failed before its first stage)."""
    reused_from: dict[str, str] = field(default_factory=dict)
    """Cached stages copied from another asset's cache made from the same image ({stage: that
    asset's name}): a photo renamed, or given twice."""


@dataclass
class BatchResult:
    items: list[ItemResult]
    report_path: Path
    report_error: str | None = None
    """Why OUT/o3d-report.json could not be written (a full disk), else None."""

    @property
    def ok(self) -> bool:
        """Every item succeeded and the report was written."""
        return all(r.status == "ok" for r in self.items) and self.report_error is None

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
