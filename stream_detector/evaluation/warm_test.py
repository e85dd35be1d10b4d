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
daemon), and is counted against its labels. Two primed protocols: "warmed" primes on the
fold models' scores as they are (the thirty-ninth look), "scaled" on the same scores rescaled
to the deployed model's scale (`priming.history_scale`, the fortieth look; what `prime` does
by default). Nothing is tuned: the priming has no parameter, and the settings are the
daemon's.

    python -m stream_detector.evaluation.warm_test --cache artifacts/cache/lstm_dt_np10
"""

from __future__ import annotations

import json
import math
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
from stream_detector.evaluation.metrics import ChannelCounts, count_channel, summarise
from stream_detector.evaluation.runner import dataset_rows
from stream_detector.evaluation.telemanom_batch import cache_options
from stream_detector.evaluation.threshold_grid import ScoreCache, raw_scores, run_engine
from stream_detector.offline import OfflineRun
from stream_detector.priming import by_reason, history_scale, primed_state
from stream_detector.serving import ServedModel
from stream_detector.settings import Settings

__all__ = ["PROTOCOLS", "WarmTest", "test_run", "warm_test"]

PROTOCOLS = ("cold", "warmed", "scaled")
# How many of a test stream's first scores its error scale is read from: telemanom's window,
# the scores a primed ε window holds before the test stream has replaced it.
SCALE_SCORES = 2_100
# How many of a primed test stream's first scores its threshold is read over: where the primed
# ε decides before the test stream's own errors have much say in it.
PRIMED_START = 500


def test_run(
    settings: Settings,
    model: ServedModel,
    chan: str,
    test: np.ndarray,
    test_scores: np.ndarray,
    warm: tuple[np.ndarray, np.ndarray, list[int]] | None = None,
) -> OfflineRun:
    """The test split streamed cold, or from the state `warm` (the history's values, scores
    and breaks) primes (`primed_state`: its threshold state, a new buffer and episode)."""
    state = None if warm is None else primed_state(settings, model, chan, *warm)
    return run_engine(settings, model, chan, test, test_scores, state=state)


def _median_threshold(run: OfflineRun, scores: int) -> float:
    """The median threshold over a run's first `scores` scores, those it judged."""
    judged = [t for t in run.thresholds[:scores] if t is not None]
    return float(np.median(judged)) if judged else float("nan")


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
    # median of the history's, by spacecraft (reads scores, no label); and over the median of
    # the history at the model's scale.
    scale: dict[str, list[float]] = field(default_factory=dict)
    scaled_scale: dict[str, list[float]] = field(default_factory=dict)
    # Each rescaled channel's factor, and the channels primed unscaled, with the reason.
    factors: dict[str, float] = field(default_factory=dict)
    unscaled: dict[str, str] = field(default_factory=dict)
    # Per primed protocol and spacecraft: the median threshold over the first PRIMED_START
    # test scores over the cold run's over its first SCALE_SCORES (reads no label).
    threshold_start: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # The runs of the channels asked to be plotted, per protocol.
    runs: dict[str, dict[str, OfflineRun]] = field(default_factory=dict)


def warm_test(
    root: Path,
    dataset: str,
    cache: Path,
    channels: Sequence[str] | None = None,
    settings: Settings | None = None,
    keep_runs: Sequence[str] = (),
) -> WarmTest:
    """Every protocol on every channel of `dataset`, under `settings` (the daemon's own by
    default), keeping the runs of the channels in `keep_runs`. The cache's checkpoints and
    test scores are read (scored if missing); the fold models are `crossfit_replay`'s, trained
    there if missing."""
    settings = settings or Settings()
    recipe = cache_recipe(cache)
    store = ScoreCache(cache, recipe)
    folds_recipe, folds_store = fold_store(cache)
    grouped: dict[str, list[LabelRow]] = {}
    for row in dataset_rows(root, dataset):
        if not channels or row.chan_id in channels:
            grouped.setdefault(row.chan_id, []).append(row)
    out = WarmTest()
    for chan, rows in tqdm(grouped.items(), desc="cold, warmed and scaled tests", unit="channel"):
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
        cold = test_run(settings, model, chan, test, arrays["test"])
        warmed = scaled = cold
        if warm is None:
            out.cold_only.append(chan)
        else:
            start = float(np.median(arrays["test"][:SCALE_SCORES]))
            craft = rows[0].spacecraft
            out.scale.setdefault(craft, []).append(_ratio(start, float(np.median(warm[1]))))
            warmed = scaled = test_run(settings, model, chan, test, arrays["test"], warm)
            # The history's values are the train split, in order.
            found = history_scale(settings, model, chan, warm[0], folds)
            if found.unscaled_because is None:
                out.factors[chan] = found.factor
                rescaled = found.apply(warm)
                out.scaled_scale.setdefault(craft, []).append(
                    _ratio(start, float(np.median(rescaled[1])))
                )
                scaled = test_run(settings, model, chan, test, arrays["test"], rescaled)
            else:
                out.unscaled[chan] = found.unscaled_because
            settled = _median_threshold(cold, SCALE_SCORES)
            for protocol, run in (("warmed", warmed), ("scaled", scaled)):
                out.threshold_start.setdefault(protocol, {}).setdefault(craft, []).append(
                    _ratio(_median_threshold(run, PRIMED_START), settled)
                )
        if chan in keep_runs:
            out.runs[chan] = dict(zip(PROTOCOLS, (cold, warmed, scaled), strict=True))
        for protocol, run in zip(PROTOCOLS, (cold, warmed, scaled), strict=True):
            predicted = run.episodes()
            out.counts[protocol].extend(
                count_channel(chan, row.anomaly_sequences, predicted, row.num_values)
                for row in rows
            )
        out.rows.extend(rows)
    return out


PANEL_TITLES = {
    "cold": "cold (no priming)",
    "warmed": "primed on the fold models' scores (--scale none)",
    "scaled": "primed at the model's scale (prime's default)",
}


def plot_protocols(root: Path, result: WarmTest, chan: str, out: Path) -> Path:
    """One channel's test split under each protocol: the value above one panel per protocol
    with its scores, threshold, labelled ranges and episodes (`compare_plot.draw_run`)."""
    import matplotlib.pyplot as plt

    from stream_detector.evaluation.compare_plot import draw_run, value_panel
    from stream_detector.evaluation.plots import save_figure

    runs = result.runs[chan]
    test = load_series(root, chan, "test")
    labelled = [seq for row in result.rows if row.chan_id == chan for seq in row.anomaly_sequences]
    fig, axes = plt.subplots(len(PROTOCOLS) + 1, 1, figsize=(12, 8.8), sharex=True)
    value_panel(axes[0], test, labelled, f"{chan}: its threshold started cold and primed")
    for ax, protocol in zip(axes[1:], PROTOCOLS, strict=True):
        draw_run(ax, runs[protocol], labelled, len(test), PANEL_TITLES[protocol])
    axes[-1].set_xlabel("step (test split)")
    return save_figure(fig, out, dpi=100)


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when the denominator is not positive: a predictor that
    repeats a channel's constant telemetry exactly (`knn_dt`) has a median error of 0 there,
    and the report's lines leave such a channel out (`_spread` counts the finite ones)."""
    return numerator / denominator if denominator > 0 else math.nan


def _spread(values: Sequence[float] | None) -> str:
    """ "median per channel M (quartiles Q1 and Q3, N channels" of the finite `values`, or ""
    if there are none."""
    finite = [v for v in values or () if np.isfinite(v)]
    if not finite:
        return ""
    q1, mid, q3 = np.percentile(finite, [25, 50, 75])
    return f"median per channel {mid:.2f} (quartiles {q1:.2f} and {q3:.2f}, {len(finite)} channels"


def report(result: WarmTest) -> str:
    """Every protocol per data set, then the rows whose counts differ from cold, and the
    label-free scale figures."""
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
    lines.append("")
    for first, second in (("cold", "warmed"), ("cold", "scaled")):
        changed = [
            f"{c.channel} {c.tp}/{c.fp} → {w.tp}/{w.fp}"
            for c, w in zip(result.counts[first], result.counts[second], strict=True)
            if (c.tp, c.fp) != (w.tp, w.fp)
        ]
        lines.append(
            f"Rows whose finds/false episodes differ, {first} → {second} ({len(changed)}): "
            + (", ".join(changed) or "none")
        )
    lines += [
        "Streamed cold in every protocol (train too short to halve): "
        + (", ".join(result.cold_only) or "none"),
    ]
    lines += [
        f"Primed unscaled in the scaled protocol, {line}" for line in by_reason(result.unscaled)
    ]
    craft_of = {r.chan_id: r.spacecraft for r in result.rows}
    factors: dict[str, list[float]] = {}
    for chan, factor in result.factors.items():
        factors.setdefault(craft_of[chan], []).append(factor)
    for craft in crafts:
        figures = [
            (
                result.scale.get(craft),
                f"the test stream's first {SCALE_SCORES:,} scores over the history's",
            ),
            (
                result.scaled_scale.get(craft),
                f"the test stream's first {SCALE_SCORES:,} scores over the history's at the "
                "model's scale",
            ),
        ]
        figures += [
            (
                by_craft.get(craft),
                f"{protocol}, the threshold over the first {PRIMED_START} test scores over "
                f"the cold run's over its first {SCALE_SCORES:,}",
            )
            for protocol, by_craft in result.threshold_start.items()
        ]
        for ratios, what in figures:
            spread = _spread(ratios)
            if spread:
                lines.append(f"{craft}: {what}, {spread}; no label read)")
    for craft in crafts:
        spread = _spread(factors.get(craft))
        if spread:
            lines.append(
                f"{craft}: the history's factor (the model's scores over fold 0's on the rows "
                f"neither fitted), {spread})"
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
@click.option(
    "--plot",
    "plots",
    multiple=True,
    help="also draw this channel's test split under each protocol into --out "
    "(warm-CHANNEL.png; repeatable)",
)
def main(
    cache: Path,
    dataset: str,
    channels: tuple[str, ...],
    data_root: Path | None,
    out: Path | None,
    plots: tuple[str, ...],
) -> None:
    """Stream every test split cold, warmed on the channel's cross-fitted train, and warmed
    on it rescaled to the model (what `stream-detector prime` writes), under the daemon's
    settings (SD_* variables), and score each against the labels. Chooses nothing: a
    measurement of what the threshold's cold start costs."""
    if plots and out is None:
        raise click.UsageError("--plot draws into --out: give both")
    settings = Settings()
    root = data_root or Path(settings.data.root)
    streamed = {r.chan_id for r in dataset_rows(root, dataset)}
    unknown = [c for c in plots if c not in streamed or (channels and c not in channels)]
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)}: not among the channels streamed", param_hint="--plot"
        )
    result = warm_test(root, dataset, cache, list(channels) or None, settings, plots)
    text = report(result)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "warm-test.md").write_text(text)
        (out / "counts.json").write_text(
            json.dumps(
                {p: [c.to_dict() for c in result.counts[p]] for p in PROTOCOLS}
                | {"rows": [r.chan_id for r in result.rows], "cold_only": result.cold_only}
                | {"factors": result.factors, "unscaled": result.unscaled}
            )
        )
    click.echo(text, nl=False)
    if out is not None:
        for chan in plots:
            click.echo(plot_protocols(root, result, chan, out / f"warm-{chan}.png"))


if __name__ == "__main__":
    main()
