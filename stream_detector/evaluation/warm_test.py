"""The test streams warmed on the cross-fitted train: each channel's threshold meets its test
split in the state it would have after running through the channel's history, as a daemon
in operation does, instead of cold (docs/threshold-race.md, thirty-ninth look).

The history is the train split as models that never saw it score it: the first half as the
fold model trained on the second half scores it, then the second half as the fold model
trained on the first scores it (`crossfit_replay`'s folds). Then the test split as the
cache's own model scores it. The daemon's engine runs the two halves on one channel state,
with a skipped step between them (its buffer starts over, the threshold and episode state
carry on). The test split then starts from the threshold state that ends in, with a new
buffer and episode (`stream_detector.priming`, what `stream-detector prime` gives the
daemon), and is counted against its labels. Nothing is tuned: the priming has no parameter,
and the settings are the daemon's.

    python -m stream_detector.evaluation.warm_test --cache artifacts/cache/lstm_dt_np10
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from stream_detector.data.smap_msl import LabelRow, load_series
from stream_detector.evaluation.crossfit_replay import (
    cache_recipe,
    channel_folds,
    fold_store,
    train_history,
)
from stream_detector.evaluation.metrics import ChannelCounts, Span, count_channel, summarise
from stream_detector.evaluation.runner import dataset_rows
from stream_detector.evaluation.telemanom_batch import cache_options
from stream_detector.evaluation.threshold_grid import ScoreCache, raw_scores, run_engine
from stream_detector.priming import primed_state
from stream_detector.serving import ServedModel
from stream_detector.settings import Settings

__all__ = ["PROTOCOLS", "WarmTest", "test_episodes", "warm_test"]

PROTOCOLS = ("cold", "warmed")
# How many of a test stream's first scores its error scale is read from: telemanom's window,
# the scores a primed ε window holds before the test stream has replaced it.
SCALE_SCORES = 2_100


def test_episodes(
    settings: Settings,
    model: ServedModel,
    chan: str,
    test: np.ndarray,
    test_scores: np.ndarray,
    warm: tuple[np.ndarray, np.ndarray, list[int]] | None = None,
) -> list[Span]:
    """The episodes of the test split: streamed cold, or from the state `warm` (the history's
    values, scores and breaks) primes (`primed_state`: its threshold state, a new buffer and
    episode)."""
    state = None if warm is None else primed_state(settings, model, chan, *warm)
    return run_engine(settings, model, chan, test, test_scores, state=state).episodes()


@dataclass
class WarmTest:
    """Per protocol, one ChannelCounts per label row; and the channels streamed cold in both
    (train too short to halve)."""

    counts: dict[str, list[ChannelCounts]] = field(
        default_factory=lambda: {p: [] for p in PROTOCOLS}
    )
    rows: list[LabelRow] = field(default_factory=list)
    cold_only: list[str] = field(default_factory=list)
    # Primed channels: the median of the test stream's first SCALE_SCORES scores over the
    # median of the history's, by spacecraft (reads scores, no label).
    scale: dict[str, list[float]] = field(default_factory=dict)


def warm_test(
    root: Path,
    dataset: str,
    cache: Path,
    channels: Sequence[str] | None = None,
    settings: Settings | None = None,
) -> WarmTest:
    """Both protocols on every channel of `dataset`, under `settings` (the daemon's own by
    default). The cache's checkpoints and test scores are read (scored if missing); the fold
    models are `crossfit_replay`'s, trained there if missing."""
    settings = settings or Settings()
    recipe = cache_recipe(cache)
    store = ScoreCache(cache, recipe)
    folds_recipe, folds_store = fold_store(cache)
    grouped: dict[str, list[LabelRow]] = {}
    for row in dataset_rows(root, dataset):
        if not channels or row.chan_id in channels:
            grouped.setdefault(row.chan_id, []).append(row)
    out = WarmTest()
    for chan, rows in tqdm(grouped.items(), desc="cold and warmed tests", unit="channel"):
        cached = store.load(chan)
        if cached is None:
            raise click.ClickException(f"{cache} has no checkpoint of {chan}: run evaluate first")
        checkpoint, arrays = cached
        model = ServedModel(checkpoint)
        test = load_series(root, chan, "test")
        if "test" not in arrays:
            arrays["test"] = raw_scores(settings, model, chan, test)
            store.save(chan, checkpoint, arrays)
        folds = channel_folds(root, chan, folds_recipe, folds_store, settings)
        warm = train_history(folds)
        if warm is None:
            out.cold_only.append(chan)
        else:
            out.scale.setdefault(rows[0].spacecraft, []).append(
                float(np.median(arrays["test"][:SCALE_SCORES]) / np.median(warm[1]))
            )
        cold = test_episodes(settings, model, chan, test, arrays["test"])
        warmed = (
            cold
            if warm is None
            else test_episodes(settings, model, chan, test, arrays["test"], warm)
        )
        for protocol, predicted in zip(PROTOCOLS, (cold, warmed), strict=True):
            out.counts[protocol].extend(
                count_channel(chan, row.anomaly_sequences, predicted, row.num_values)
                for row in rows
            )
        out.rows.extend(rows)
    return out


def report(result: WarmTest) -> str:
    """Both protocols per data set, then the channels whose counts differ."""
    lines = [
        "| data | protocol | event F1 | composite F1 | flagged | labels found | false episodes |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    crafts = sorted({r.spacecraft for r in result.rows}, key=lambda c: c != "SMAP")
    for craft in crafts:
        for protocol in PROTOCOLS:
            counts = [
                c
                for c, r in zip(result.counts[protocol], result.rows, strict=True)
                if r.spacecraft == craft
            ]
            m = summarise(counts)
            lines.append(
                f"| {craft} | {protocol} | {m.f1:.3f} | {m.composite_f1:.3f} "
                f"| {m.flagged_fraction:.1%} | {m.tp} of {m.tp + m.fn} | {m.fp} |"
            )
    changed = [
        f"{c.channel} {c.tp}/{c.fp} → {w.tp}/{w.fp}"
        for c, w in zip(result.counts["cold"], result.counts["warmed"], strict=True)
        if (c.tp, c.fp) != (w.tp, w.fp)
    ]
    lines += [
        "",
        f"Rows whose finds/false episodes differ, cold → warmed ({len(changed)}): "
        + (", ".join(changed) or "none"),
        "Streamed cold in both (train too short to halve): "
        + (", ".join(result.cold_only) or "none"),
    ]
    for craft in crafts:
        ratios = result.scale.get(craft)
        if ratios:
            q1, mid, q3 = np.percentile(ratios, [25, 50, 75])
            lines.append(
                f"{craft}: the test stream's first {SCALE_SCORES:,} scores over the history's, "
                f"median per channel {mid:.2f} (quartiles {q1:.2f} and {q3:.2f}, "
                f"{len(ratios)} primed channels; no label read)"
            )
    return "\n".join(lines) + "\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@cache_options(
    "a score cache of `evaluate --score-cache` (its checkpoints and test scores); its "
    "crossfit/ folder holds the fold models (`crossfit_replay`), trained here if missing"
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="also write the report and every row's counts (counts.json) here",
)
def main(
    cache: Path,
    dataset: str,
    channels: tuple[str, ...],
    data_root: Path | None,
    out: Path | None,
) -> None:
    """Stream every test split cold and warmed on the channel's cross-fitted train, under
    the daemon's settings (SD_* variables), and score both against the labels. Chooses
    nothing: a measurement of what the threshold's cold start costs."""
    settings = Settings()
    root = data_root or Path(settings.data.root)
    result = warm_test(root, dataset, cache, list(channels) or None, settings)
    text = report(result)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "warm-test.md").write_text(text)
        (out / "counts.json").write_text(
            json.dumps(
                {p: [c.to_dict() for c in result.counts[p]] for p in PROTOCOLS}
                | {"rows": [r.chan_id for r in result.rows], "cold_only": result.cold_only}
            )
        )
    click.echo(text, nl=False)


if __name__ == "__main__":
    main()
