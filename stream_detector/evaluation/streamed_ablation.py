"""Which streamed rule makes the false episodes: the default threshold with one of its rules
undone at a time, on one model's cached errors, beside telemanom's 2018 batch form.

A diagnostic, like `telemanom_batch`. On SMAP the batch processing of the default
detector's errors raised 5 false episodes where the streamed default raised 20
(docs/threshold-race.md, "The tenth look's diagnostic on SMAP"). The streamed form adds or changes
rules the batch form does not have; each row of `ABLATIONS` sets one of them as the batch
form has it, keeps everything else, and says what becomes of the default's episodes: how
many of its false episodes are gone, how many of its finds are lost, how many false
episodes are new. Each false episode of the default is also placed: does the batch form
raise one there too (then it is in the errors, not the rule), and does it start within the
stream's first window of 2,100 scores (where the streamed ε is learned from fewer errors).

Test labels score the rows; they choose nothing. A change of default goes through the
threshold race's label-free rule (`threshold_grid.race_decision`).

    python -m stream_detector.evaluation.streamed_ablation --cache artifacts/cache/lstm_dt_np10
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from stream_detector.data.smap_msl import LabelRow
from stream_detector.evaluation.metrics import (
    ChannelCounts,
    Span,
    count_channel,
    overlaps,
    summarise,
)
from stream_detector.evaluation.runner import dataset_rows
from stream_detector.evaluation.telemanom_batch import BatchConfig, cache_options, cached_channel
from stream_detector.evaluation.threshold_grid import run_engine
from stream_detector.settings import Settings, ThresholdSettings

# telemanom's window of errors: a false episode that starts within this many scores of the
# stream's first was judged against an ε learned from fewer.
FIRST_WINDOW = 2100

# Each row undoes one rule of the streamed default (parameters of `TelemanomThreshold`), as
# the 2018 batch form has it; the last undoes the spike rule, the protection and the short
# warm-up at once.
ABLATIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("the default", {}),
    # The batch form has no spike rule: a one-step spike counts only through the smoothing.
    ("no spike rule", {"spike_margin": 0.0}),
    # The batch form learns every error, anomalous or not.
    ("unprotected", {"protect": False}),
    # The batch form flags nothing in the first 500 errors of a series of 2,500 or more.
    ("warm-up 500", {"warmup": 500}),
    # Causal, the nearest to judging the first window whole: no alarm before it is full.
    ("warm-up 2,100", {"warmup": FIRST_WINDOW}),
    # The batch form prunes against every unflagged error of its window (the fourteenth look).
    ("pruned against the window", {"prune_window": True}),
    (
        "no spike rule, unprotected, warm-up 500",
        {"spike_margin": 0.0, "protect": False, "warmup": 500},
    ),
)


def _false(counts: ChannelCounts) -> list[Span]:
    return [p for p in counts.predicted if not any(overlaps(p, lab) for lab in counts.labelled)]


def _found(counts: ChannelCounts) -> list[Span]:
    return [lab for lab in counts.labelled if any(overlaps(p, lab) for p in counts.predicted)]


@dataclass
class AblationResult:
    """Per label row: each ablation's counts (in `ABLATIONS` order), the batch form's, and
    how many rows of history come before the row's first score."""

    rows: list[LabelRow] = field(default_factory=list)
    ablations: list[list[ChannelCounts]] = field(default_factory=lambda: [[] for _ in ABLATIONS])
    batch: list[ChannelCounts] = field(default_factory=list)
    leads: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Changes:
    """What one ablation makes of the default's episodes over some label rows."""

    false_gone: int  # the default's false episodes that no episode of the ablation overlaps
    false_new: int  # the ablation's false episodes that overlap none of the default's
    finds_lost: int  # labels the default finds and the ablation does not


@dataclass(frozen=True)
class FalsePlaces:
    """Where the default's false episodes are, over some label rows."""

    total: int
    in_batch: int  # the batch form raises an episode overlapping it
    in_first_window: int  # it starts within the first `FIRST_WINDOW` scores


def ablation_settings(base: Settings, change: dict[str, Any]) -> Settings:
    """`base` with its telemanom threshold's parameters updated by `change`."""
    if base.threshold.kind != "telemanom":
        raise ValueError(f"the ablations are of telemanom's threshold, not {base.threshold.kind!r}")
    threshold = base.threshold.model_dump()
    threshold["params"] = {**threshold["params"], **change}
    return base.model_copy(update={"threshold": ThresholdSettings(**threshold)})


def run_ablations(
    root: Path,
    dataset: str,
    cache: Path,
    channels: Sequence[str] | None = None,
    base: Settings | None = None,
) -> AblationResult:
    """Every row of `ABLATIONS` through the daemon's engine on each cached channel's test
    scores (the cache of `evaluate --thresholds ... --score-cache`), and the batch form."""
    base = base or Settings()
    settings = [ablation_settings(base, change) for _, change in ABLATIONS]
    rows = [r for r in dataset_rows(root, dataset) if not channels or r.chan_id in channels]
    by_chan: dict[str, list[LabelRow]] = {}
    for row in rows:
        by_chan.setdefault(row.chan_id, []).append(row)
    result = AblationResult()
    for chan, chan_rows in tqdm(by_chan.items(), desc="ablations", unit="channel"):
        ch = cached_channel(root, cache, chan, BatchConfig())
        episodes = [run_engine(s, ch.model, chan, ch.test, ch.scores).episodes() for s in settings]
        for row in chan_rows:
            result.rows.append(row)
            result.leads.append(ch.lead)
            labelled, n = row.anomaly_sequences, row.num_values
            result.batch.append(count_channel(chan, labelled, ch.found, n))
            for counts, spans in zip(result.ablations, episodes, strict=True):
                counts.append(count_channel(chan, labelled, spans, n))
    return result


def changes(result: AblationResult, ablation: int, picked: Sequence[int]) -> Changes:
    """What ablation number `ablation` makes of the default's episodes on the rows `picked`."""
    gone = new = lost = 0
    for i in picked:
        default, other = result.ablations[0][i], result.ablations[ablation][i]
        gone += sum(not any(overlaps(f, s) for s in other.predicted) for f in _false(default))
        new += sum(not any(overlaps(f, s) for s in default.predicted) for f in _false(other))
        kept = _found(other)
        lost += sum(lab not in kept for lab in _found(default))
    return Changes(gone, new, lost)


def false_places(result: AblationResult, picked: Sequence[int]) -> FalsePlaces:
    """Where the default's false episodes on the rows `picked` are."""
    total = in_batch = early = 0
    for i in picked:
        false = _false(result.ablations[0][i])
        total += len(false)
        in_batch += sum(any(overlaps(f, b) for b in result.batch[i].predicted) for f in false)
        early += sum(f[0] < result.leads[i] + FIRST_WINDOW for f in false)
    return FalsePlaces(total, in_batch, early)


def ablation_table(result: AblationResult) -> str:
    """Markdown: one line per ablation and data set and the batch form's, then where the
    default's false episodes are."""
    lines = [
        "| streamed threshold | data | P | R | F1 | composite F1 | flagged | false episodes "
        "| of the default's gone | new | finds lost |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for craft in sorted({r.spacecraft for r in result.rows}):
        picked = [i for i, r in enumerate(result.rows) if r.spacecraft == craft]
        for number, (name, _) in enumerate(ABLATIONS):
            m = summarise([result.ablations[number][i] for i in picked])
            c = changes(result, number, picked)
            moved = f"{c.false_gone} | {c.false_new} | {c.finds_lost}" if number else " | |"
            lines.append(
                f"| {name} | {craft} | {m.precision:.3f} | {m.recall:.3f} | {m.f1:.3f} "
                f"| {m.composite_f1:.3f} | {m.flagged_fraction:.1%} | {m.fp} | {moved} |"
            )
        b = summarise([result.batch[i] for i in picked])
        lines.append(
            f"| telemanom's 2018 batch form | {craft} | {b.precision:.3f} | {b.recall:.3f} "
            f"| {b.f1:.3f} | {b.composite_f1:.3f} | {b.flagged_fraction:.1%} | {b.fp} | | | |"
        )
        places = false_places(result, picked)
        notes.append(
            f"{craft}: of the default's {places.total} false episodes, the batch form raises one "
            f"overlapping {places.in_batch}; {places.in_first_window} start within the first "
            f"{FIRST_WINDOW:,} scores."
        )
    return "\n".join([*lines, "", *notes])


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@cache_options("a score cache of `evaluate --thresholds ... --score-cache` (raw errors)")
def main(cache: Path, dataset: str, channels: tuple[str, ...], data_root: Path | None) -> None:
    """Undo the streamed default threshold's rules one at a time on a model's cached test
    errors, and say what becomes of the default's false episodes and finds (a diagnostic:
    test labels score, they choose nothing)."""
    root = data_root or Path(Settings().data.root)
    click.echo(ablation_table(run_ablations(root, dataset, cache, list(channels) or None)))


if __name__ == "__main__":
    main()
