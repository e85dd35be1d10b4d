"""`stream-detector evaluate`: train per channel, score the test split causally, count events.

Each channel is trained on its own train split and its test split is streamed through the
same `DetectionEngine` the daemon runs (buffers, batched scoring, threshold, episode rules),
in stream order, via `run_offline`. The episodes' spans are the predicted sequences; they are
scored against ``labeled_anomalies.csv`` with `metrics`, and telemanom's published run is
scored by the same code as the reference row.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog
from tqdm import tqdm

from stream_detector.data.smap_msl import LabelRow, load_labels, load_series
from stream_detector.evaluation.metrics import (
    ChannelCounts,
    EventMetrics,
    count_channel,
    pr_auc,
    roc_auc,
    summarise,
)
from stream_detector.evaluation.reference import telemanom_reference
from stream_detector.models.base import FitConfig
from stream_detector.offline import OfflineRun, run_offline
from stream_detector.serving import ServedModel
from stream_detector.settings import Settings
from stream_detector.training.checkpoint import Checkpoint
from stream_detector.training.trainer import Scaling, Split, train_on_series

log = structlog.get_logger(__name__)

DATASETS = {"smap": ("SMAP",), "msl": ("MSL",), "both": ("SMAP", "MSL")}

# The last fifth of each channel's train split is its held-out part: the threshold race's
# label-free proxy (clean validation episodes, injected anomalies) is measured there.
HELD_OUT_FRACTION = 0.2

FitPart = Literal["all", "before_held_out"]
FIT_PARTS: tuple[FitPart, ...] = ("all", "before_held_out")


def held_out_start(length: int) -> int:
    """The first row of the held-out part of a train split of ``length`` rows."""
    return int(length * (1 - HELD_OUT_FRACTION))


@dataclass(frozen=True)
class ModelRecipe:
    """How to train the detector of each channel.

    ``fit_part`` ``"before_held_out"`` trains on the train split up to its held-out part
    only, so that the label-free proxy measured there is out of sample whatever the
    ``split``: a recipe that trains on the end of the series can then be judged on data
    it never saw, as a deployed model meets its test stream (docs/threshold-race.md, eighteenth
    look). A channel too short to have a held-out part longer than a window has no proxy,
    and trains on its whole split as usual.
    """

    kind: str
    window: int
    hyperparameters: dict[str, Any]
    fit: FitConfig
    train_stride: int = 1
    scaling: Scaling = "standard"
    split: Split = "chronological"
    fit_part: FitPart = "all"

    def describe(self) -> dict[str, Any]:
        # Only non-default scaling, split and fit part are written, so older score caches
        # stay valid.
        return {
            "kind": self.kind,
            "window": self.window,
            "hyperparameters": self.hyperparameters,
            "fit": self.fit.to_dict(),
            "train_stride": self.train_stride,
            **({"scaling": self.scaling} if self.scaling != "standard" else {}),
            **({"split": self.split} if self.split != "chronological" else {}),
            **({"fit_part": self.fit_part} if self.fit_part != "all" else {}),
        }

    @classmethod
    def from_description(cls, described: dict[str, Any]) -> ModelRecipe:
        """The recipe `describe` wrote (a score cache's ``recipe.json``)."""
        return cls(
            kind=described["kind"],
            window=int(described["window"]),
            hyperparameters=described["hyperparameters"],
            fit=FitConfig(**described["fit"]),
            train_stride=int(described.get("train_stride", 1)),
            scaling=described.get("scaling", "standard"),
            split=described.get("split", "chronological"),
            fit_part=described.get("fit_part", "all"),
        )

    def fitted_part(self, train: np.ndarray) -> np.ndarray:
        """The rows of a channel's train split that this recipe trains on."""
        if self.fit_part == "all":
            return train
        if self.fit_part != "before_held_out":
            raise ValueError(
                f"fit_part must be one of {', '.join(FIT_PARTS)}, got {self.fit_part!r}"
            )
        start = held_out_start(len(train))
        return train[:start] if len(train) - start > self.window else train


def train_channel(root: Path, chan: str, recipe: ModelRecipe) -> Checkpoint:
    """The recipe's detector, trained on (its part of) one channel's train split (no
    progress bar)."""
    return train_on(recipe, chan, recipe.fitted_part(load_series(root, chan, "train")))


def train_on(recipe: ModelRecipe, chan: str, series: np.ndarray) -> Checkpoint:
    """The recipe's detector, trained on one (T, D) series of a channel (no progress bar)."""
    return train_on_series(
        recipe.kind,
        [series],
        window=recipe.window,
        channels=[chan],
        dataset="smap_msl",
        hyperparameters=recipe.hyperparameters,
        fit_config=recipe.fit,
        train_stride=recipe.train_stride,
        scaling=recipe.scaling,
        split=recipe.split,
        progress=False,
    )


@dataclass
class ChannelOutcome:
    row: LabelRow
    counts: ChannelCounts
    run: OfflineRun
    train_s: float
    score_s: float
    roc_auc: float | None
    pr_auc: float | None


@dataclass
class EvaluationReport:
    recipe: ModelRecipe
    settings: dict[str, Any]
    outcomes: list[ChannelOutcome] = field(default_factory=list)

    def by_spacecraft(self) -> dict[str, EventMetrics]:
        out = {}
        for craft in sorted({o.row.spacecraft for o in self.outcomes}):
            out[craft] = summarise([o.counts for o in self.outcomes if o.row.spacecraft == craft])
        return out


def point_labels(row: LabelRow) -> np.ndarray:
    truth = np.zeros(row.num_values, dtype=bool)
    for start, end in row.anomaly_sequences:
        truth[start : end + 1] = True
    return truth


def evaluate_channel(
    root: Path, rows: Sequence[LabelRow], recipe: ModelRecipe, settings: Settings
) -> list[ChannelOutcome]:
    """Train on one channel, stream its test split through the engine, count per label row."""
    from stream_detector.app import build_engine  # the daemon's own wiring

    chan = rows[0].chan_id
    started = time.perf_counter()
    checkpoint = train_channel(root, chan, recipe)
    train_s = time.perf_counter() - started
    engine = build_engine(settings, ServedModel(checkpoint))
    engine.emit_scores = True
    test = load_series(root, chan, "test")
    started = time.perf_counter()
    run = run_offline(engine, chan, test, steps_per_record=10)
    score_s = time.perf_counter() - started
    predicted = run.episodes()
    outcomes = []
    for row in rows:
        truth = point_labels(row)
        seqs = np.asarray(run.end_seqs, dtype=np.int64)
        scores = np.asarray(run.scores, dtype=np.float64)
        outcomes.append(
            ChannelOutcome(
                row=row,
                counts=count_channel(chan, row.anomaly_sequences, predicted, row.num_values),
                run=run,
                train_s=train_s,
                score_s=score_s,
                roc_auc=roc_auc(scores, truth[seqs]) if len(seqs) else None,
                pr_auc=pr_auc(scores, truth[seqs]) if len(seqs) else None,
            )
        )
    return outcomes


def dataset_rows(root: Path, dataset: str) -> list[LabelRow]:
    """The label rows of one data set ("smap", "msl" or "both"), in file order."""
    crafts = DATASETS[dataset]
    return [r for r in load_labels(root) if r.spacecraft in crafts]


def evaluate(
    root: Path,
    dataset: str,
    recipe: ModelRecipe,
    settings: Settings,
    *,
    channels: Sequence[str] | None = None,
    progress: bool = True,
) -> EvaluationReport:
    rows = dataset_rows(root, dataset)
    if channels:
        unknown = set(channels) - {r.chan_id for r in rows}
        if unknown:
            raise ValueError(f"no label row for {sorted(unknown)} in {dataset}")
        rows = [r for r in rows if r.chan_id in set(channels)]
    grouped: dict[str, list[LabelRow]] = {}
    for row in rows:
        grouped.setdefault(row.chan_id, []).append(row)  # P-2 has two rows: trained once
    report = EvaluationReport(recipe=recipe, settings=settings.masked())
    for chan in tqdm(
        grouped,
        desc=f"{recipe.kind} on {dataset}",
        unit="channel",
        disable=None if progress else True,
    ):
        outcomes = evaluate_channel(root, grouped[chan], recipe, settings)
        report.outcomes.extend(outcomes)
        c = outcomes[0].counts
        log.info(
            "channel_evaluated",
            channel=chan,
            tp=c.tp,
            fp=c.fp,
            fn=c.fn,
            flagged=c.flagged_points,
            train_s=round(outcomes[0].train_s, 1),
        )
    return report


def write_report(report: EvaluationReport, root: Path, out_dir: Path, plots: bool = True) -> Path:
    """CSV per label row, a markdown summary with the telemanom row, a plot per channel."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "channels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "chan_id",
                "spacecraft",
                "n_points",
                "labelled",
                "predicted",
                "tp",
                "fp",
                "fn",
                "flagged_points",
                "true_flagged_points",
                "roc_auc",
                "pr_auc",
                "train_s",
                "score_s",
            ]
        )
        for o in report.outcomes:
            c = o.counts
            writer.writerow(
                [
                    c.channel,
                    o.row.spacecraft,
                    c.n_points,
                    json.dumps(c.labelled),
                    json.dumps(c.predicted),
                    c.tp,
                    c.fp,
                    c.fn,
                    c.flagged_points,
                    c.true_flagged_points,
                    _fmt(o.roc_auc),
                    _fmt(o.pr_auc),
                    f"{o.train_s:.2f}",
                    f"{o.score_s:.2f}",
                ]
            )
    lines = [
        f"# Evaluation: {report.recipe.kind}",
        "",
        "Event rule: a labelled sequence is found when a predicted sequence overlaps it; a "
        "predicted sequence overlapping no label is a false positive. Composite F1 = harmonic "
        "mean of event recall and point-wise precision (rank by this). Point-adjusted F1 is "
        "inflated by construction.",
        "",
        "| model | data | channels | P | R | F1 | F0.5 | flagged | point P | composite F1 | "
        "PA-F1 (inflated) | ROC AUC | PR AUC | delay | train s/ch | score steps/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for craft, m in report.by_spacecraft().items():
        outs = [o for o in report.outcomes if o.row.spacecraft == craft]
        aucs = [o.roc_auc for o in outs if o.roc_auc is not None]
        praucs = [o.pr_auc for o in outs if o.pr_auc is not None]
        steps = sum(len(o.run.scores) for o in outs)
        score_s = sum(o.score_s for o in outs)
        train_s = float(np.mean([o.train_s for o in outs]))
        lines.append(
            _row(
                report.recipe.kind,
                craft,
                m,
                float(np.mean(aucs)) if aucs else None,
                float(np.mean(praucs)) if praucs else None,
                train_s,
                steps / score_s if score_s else None,
            )
        )
        chans = {o.row.chan_id for o in outs}
        ref = [c for c in telemanom_reference(root, craft) if c.channel in chans]
        lines.append(
            _row("telemanom (published run)", craft, summarise(ref), None, None, None, None)
        )
    lines += [
        "",
        "Configuration:",
        "",
        "```json",
        json.dumps(
            {
                "recipe": report.recipe.describe(),
                "threshold": report.settings["threshold"],
                "alerts": report.settings["alerts"],
            },
            indent=2,
            default=str,
        ),
        "```",
        "",
    ]
    summary = out_dir / "summary.md"
    summary.write_text("\n".join(lines))
    (out_dir / "summary.json").write_text(json.dumps(_summary_rows(report, root), indent=2))
    if plots:
        from stream_detector.evaluation.plots import plot_channel

        (out_dir / "plots").mkdir(exist_ok=True)
        done = set()
        for o in report.outcomes:
            if o.row.chan_id in done:
                continue
            done.add(o.row.chan_id)
            plot_channel(
                o,
                load_series(root, o.row.chan_id, "test"),
                out_dir / "plots" / f"{o.row.chan_id}.png",
            )
    return summary


def _summary_rows(report: EvaluationReport, root: Path) -> dict[str, Any]:
    """Machine-readable twin of summary.md, for `collect` to build docs/results.md."""
    rows = []
    for craft, m in report.by_spacecraft().items():
        outs = [o for o in report.outcomes if o.row.spacecraft == craft]
        aucs = [o.roc_auc for o in outs if o.roc_auc is not None]
        praucs = [o.pr_auc for o in outs if o.pr_auc is not None]
        score_s = sum(o.score_s for o in outs)
        chans = {o.row.chan_id for o in outs}
        ref = summarise([c for c in telemanom_reference(root, craft) if c.channel in chans])
        rows.append(
            {
                "spacecraft": craft,
                "metrics": m.to_dict(),
                "roc_auc": float(np.mean(aucs)) if aucs else None,
                "pr_auc": float(np.mean(praucs)) if praucs else None,
                "train_s_per_channel": float(np.mean([o.train_s for o in outs])),
                "score_steps_per_s": sum(len(o.run.scores) for o in outs) / score_s
                if score_s
                else None,
                "telemanom": ref.to_dict(),
            }
        )
    return {
        "recipe": report.recipe.describe(),
        "threshold": report.settings["threshold"],
        "alerts": report.settings["alerts"],
        "rows": rows,
    }


def _fmt(x: float | None, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _row(
    name: str,
    craft: str,
    m: EventMetrics,
    auc: float | None,
    prauc: float | None,
    train_s: float | None,
    rate: float | None,
) -> str:
    delay = "" if m.mean_delay is None else f"{m.mean_delay:.0f}"
    return (
        f"| {name} | {craft} | {m.channels} | {m.precision:.3f} | {m.recall:.3f} | {m.f1:.3f} | "
        f"{m.f05:.3f} | {m.flagged_fraction:.1%} | {m.point_precision:.3f} | "
        f"**{m.composite_f1:.3f}** | {m.point_adjusted_f1:.3f} | {_fmt(auc)} | {_fmt(prauc)} | "
        f"{delay} | {_fmt(train_s, 1)} | {'' if rate is None else f'{rate:,.0f}'} |"
    )
