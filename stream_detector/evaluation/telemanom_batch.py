"""telemanom's error processing as its 2018 code ran it: offline, a batch of 70 at a time.

A diagnostic, not a strategy. The threshold race (docs/threshold-race.md) streams telemanom's
processing (`thresholds/telemanom.py`), and every look so far has fallen short of
telemanom's published run. This replays the same model's cached errors through the
processing as the run published on 2018-05-19 did it (``telemanom/errors.py`` of that
version: ``get_errors``, ``process_errors``, ``find_epsilon``, ``compare_to_epsilon``,
``prune_anoms``), so that the gap can be split into what the streamed form costs and what
the model's errors cost. It reads the test labels only to score what it found.

What the batch form does that the streamed one does not:

- **The first window is judged in hindsight.** The first 2,100 errors are one window, and
  anything in it (after the first 500, or 250 or 0 for short series) may be flagged, with ε
  computed over all of it. Later windows slide by 70 and only their newest 70 errors may be
  flagged, against an ε that includes them.
- **Nothing is protected.** Every error, anomalous or not, is in the window its ε comes
  from.
- **Smoothing starts flat.** The EWMA (span 105, pandas' ``adjust=True`` weights) has its
  first 250 values replaced by the mean of its first 500, except on C-2, whose anomaly is
  that early (a special case of the 2018 code, kept).
- **Pruning is per window**, against the largest error of the window that was neither
  flagged now nor before (the 2018 code checks "before" one batch off; kept too).

Kept deliberately as the 2018 code had it; only two things differ. Found sequences are
placed on the test rows our errors belong to (the 2018 code indexed them from the first
predicted value; the 250-row shift came later, telemanom PR #27). Our errors run to the last
row; telemanom's stop 10 rows earlier (`BatchConfig.n_predictions`), so the last 10 are
dropped, which keeps its window count and warm-up as they were. And on a short series the
2018 code could pad an early error backwards to negative indices; those are dropped. The 5–95 %
range of the values is taken over the predicted value of each row (telemanom's ``y_test``
held the next 10 values of each row, nearly the same set).

**Without the hindsight** (``--causal``, `causal_flags`): every batch judged when it is
complete, in the window that ends with it, with no flat start and a fixed warm-up, so that
a decision reads no error after its batch. Its window code is the daemon's
(`thresholds/telemanom_batches.py`, which streams this form); the thirty-second look of
docs/threshold-race.md measured what the hindsight was worth (on SMAP, almost nothing).

    python -m stream_detector.evaluation.telemanom_batch --cache artifacts/cache/lstm_dt_np10 \\
        --dataset msl [--causal]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
from tqdm import tqdm

from stream_detector.data.smap_msl import LabelRow, load_series
from stream_detector.evaluation.metrics import ChannelCounts, count_channel, summarise
from stream_detector.evaluation.plots import save_figure
from stream_detector.evaluation.reference import telemanom_reference
from stream_detector.evaluation.runner import dataset_rows
from stream_detector.evaluation.threshold_grid import run_engine
from stream_detector.serving import ServedModel
from stream_detector.settings import Settings
from stream_detector.thresholds.telemanom_batches import runs, window_anomalies
from stream_detector.training.checkpoint import load_checkpoint


@dataclass(frozen=True)
class BatchConfig:
    """telemanom's config.yaml of the published run, the values its error processing reads."""

    l_s: int = 250  # history before the predicted value
    batch: int = 70
    window_size: int = 30  # batches per window of errors
    error_buffer: int = 100
    p: float = 0.13  # minimum percent decrease between sequences' peaks (pruning)
    smoothing_perc: float = 0.05
    # telemanom's test windows each need this many targets, so its errors stop this many
    # rows before the series does; that length sets its windows and its warm-up.
    n_predictions: int = 10

    @property
    def span(self) -> int:
        return int(self.batch * self.window_size * self.smoothing_perc)


def smoothed_errors(
    errors: np.ndarray, config: BatchConfig = BatchConfig(), flatten_start: bool = True
) -> np.ndarray:
    """telemanom's ``get_errors``: EWMA of span `config.span` with pandas' default
    (``adjust=True``) weights, the first l_s values then set to the mean of the first 2·l_s."""
    keep = 1.0 - 2.0 / (config.span + 1)
    out = np.empty(len(errors))
    num = den = 0.0
    for i, e in enumerate(np.asarray(errors, dtype=np.float64)):
        num = e + keep * num
        den = 1.0 + keep * den
        out[i] = num / den
    if flatten_start:
        out[: config.l_s] = out[: 2 * config.l_s].mean()
    return out


def _window_anomalies(
    e_s: np.ndarray,
    values: np.ndarray,
    allowed_from: int,
    before_offset: int,
    flagged_before: np.ndarray,
    config: BatchConfig,
) -> list[int]:
    """One window's flagged points (`window_anomalies`, shared with the streamed
    `telemanom_batches`), with the earlier finds of the whole series looked up at
    x + `before_offset`."""
    index = np.arange(len(e_s)) + before_offset
    inside = (index >= 0) & (index < len(flagged_before))
    before = np.zeros(len(e_s), dtype=bool)
    before[inside] = flagged_before[index[inside]]
    found, _ = window_anomalies(e_s, values, allowed_from, before, config.error_buffer, config.p)
    return found


def batch_sequences(
    errors: np.ndarray,
    values: np.ndarray,
    config: BatchConfig = BatchConfig(),
    flatten_start: bool = True,
) -> list[tuple[int, int]]:
    """telemanom's ``process_errors`` on one channel's raw errors: the anomalous sequences,
    indexed like `errors` (ends inclusive). `values[i]` is the value `errors[i]` is of."""
    if len(errors) != len(values):
        raise ValueError(f"{len(errors)} errors but {len(values)} values")
    if len(errors) == 0:
        raise ValueError("no errors")
    e_s = smoothed_errors(errors, config, flatten_start)
    n, batch = len(errors), config.batch
    window_size = config.window_size
    n_windows = int((n - batch * window_size) / batch)
    # int() truncates toward zero: any series of at least one error ends with n_windows ≥ 0.
    while n_windows < 0:
        window_size -= 1
        n_windows = int((n - batch * window_size) / batch)
    # The first window is judged whole after `ignore` errors, chosen by the series' length.
    ignore = 2 * config.l_s if n >= 2500 else config.l_s if n >= 1800 else 0
    flagged = np.zeros(n, dtype=bool)
    for i in range(1, n_windows + 2):
        start = (i - 1) * batch
        # The 2018 code ends each window by the configured size, even where it shrank it.
        end = n if i == n_windows + 1 else config.window_size * batch + (i - 1) * batch
        # Later windows flag their newest batch only. The 2018 code looks earlier finds up
        # one batch before where the window starts (x + (window − 1)·batch; kept as it ran).
        allowed = ignore if i == 1 else end - start - batch
        found = _window_anomalies(
            e_s[start:end], values[start:end], allowed, start - batch, flagged, config
        )
        flagged[[j + start for j in found]] = True
    return runs([int(i) for i in np.flatnonzero(flagged)])


def causal_flags(
    errors: np.ndarray,
    values: np.ndarray,
    config: BatchConfig = BatchConfig(),
    warmup: int = 140,
) -> np.ndarray:
    """The batch form without its hindsight, one flag per error: each batch of
    `config.batch` errors is judged when it is complete, in a window of at most
    `config.window_size` batches that ends with it, so a decision comes at most one batch
    late and reads no error after it. The smoothing has no flat start, and nothing before
    error `warmup` is flagged (a fixed warm-up: a stream's length is not known while it
    runs). From the first full window on, windows are the batch form's; the first window is
    not judged whole, and a last, shorter batch is judged at the stream's end."""
    if len(errors) != len(values):
        raise ValueError(f"{len(errors)} errors but {len(values)} values")
    if len(errors) == 0:
        raise ValueError("no errors")
    e_s = smoothed_errors(errors, config, flatten_start=False)
    n, batch = len(errors), config.batch
    flagged = np.zeros(n, dtype=bool)
    for batch_start in range(0, n, batch):
        end = min(n, batch_start + batch)
        if end <= warmup:
            continue
        start = max(0, end - config.window_size * batch)
        allowed = max(batch_start, warmup) - start
        found = _window_anomalies(
            e_s[start:end], values[start:end], allowed, start - batch, flagged, config
        )
        flagged[[j + start for j in found]] = True
    return flagged


def causal_batch_sequences(
    errors: np.ndarray,
    values: np.ndarray,
    config: BatchConfig = BatchConfig(),
    warmup: int = 140,
) -> list[tuple[int, int]]:
    """`causal_flags` as sequences, indexed like `errors` (ends inclusive)."""
    flags = causal_flags(errors, values, config, warmup)
    return runs([int(i) for i in np.flatnonzero(flags)])


@dataclass(frozen=True)
class CachedChannel:
    """One channel's test series and cached scores, and what the batch form found in them."""

    test: np.ndarray
    scores: np.ndarray  # the score cache's, one per row from `lead` on
    lead: int  # rows of history before the first score
    smoothed: np.ndarray  # telemanom's smoothed errors, from row `lead` on
    found: list[tuple[int, int]]  # the batch form's sequences, on test rows
    model: ServedModel
    errors: np.ndarray  # telemanom's errors: the scores but the last n_predictions
    values: np.ndarray  # the value each error is of

    def causal_found(self, config: BatchConfig) -> list[tuple[int, int]]:
        """The causal form's sequences (`causal_batch_sequences`), on test rows."""
        found = causal_batch_sequences(self.errors, self.values, config)
        return [(s + self.lead, e + self.lead) for s, e in found]


def cached_channel(root: Path, cache: Path, chan: str, config: BatchConfig) -> CachedChannel:
    if not (cache / f"{chan}.npz").exists():
        raise click.ClickException(f"{cache} has no scores of {chan}")
    with np.load(cache / f"{chan}.npz") as data:
        scores = data["test"]
    test = load_series(root, chan, "test")
    lead = len(test) - len(scores)
    errors = scores[: len(scores) - config.n_predictions].astype(np.float64)
    values = test[lead : lead + len(errors), 0]
    # C-2's anomaly is too early for the flat start: the 2018 code made it the exception.
    flatten = chan != "C-2"
    found = [(s + lead, e + lead) for s, e in batch_sequences(errors, values, config, flatten)]
    return CachedChannel(
        test,
        scores,
        lead,
        smoothed_errors(errors, config, flatten),
        found,
        ServedModel(load_checkpoint(cache / f"{chan}.pt", device="cpu")),
        errors,
        values,
    )


@dataclass
class BatchResult:
    """Per label row, what the batch form found and what the streamed default found (and,
    when asked for, the causal form)."""

    rows: list[LabelRow]
    batch: list[ChannelCounts]
    streamed: list[ChannelCounts]
    causal: list[ChannelCounts] = field(default_factory=list)


def run_batch(
    root: Path,
    dataset: str,
    cache: Path,
    channels: Sequence[str] | None = None,
    causal: bool = False,
) -> BatchResult:
    """Both processings on every cached channel's test errors (the cache of
    `evaluate --thresholds ... --score-cache`): the batch form, and the daemon's engine with
    the default settings; with `causal`, the batch form without hindsight too."""
    rows = [r for r in dataset_rows(root, dataset) if not channels or r.chan_id in channels]
    result = BatchResult([], [], [])
    config = BatchConfig()
    settings = Settings()
    by_chan: dict[str, list[LabelRow]] = {}
    for row in rows:
        by_chan.setdefault(row.chan_id, []).append(row)
    for chan, chan_rows in tqdm(by_chan.items(), desc="telemanom, batch", unit="channel"):
        ch = cached_channel(root, cache, chan, config)
        streamed = run_engine(settings, ch.model, chan, ch.test, ch.scores).episodes()
        causal_found = ch.causal_found(config) if causal else []
        for row in chan_rows:
            result.rows.append(row)
            result.batch.append(
                count_channel(chan, row.anomaly_sequences, ch.found, row.num_values)
            )
            result.streamed.append(
                count_channel(chan, row.anomaly_sequences, streamed, row.num_values)
            )
            if causal:
                result.causal.append(
                    count_channel(chan, row.anomaly_sequences, causal_found, row.num_values)
                )
    return result


def batch_table(result: BatchResult, root: Path) -> str:
    lines = [
        "| processing | data | label rows | P | R | F1 | composite F1 | flagged |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for craft in sorted({r.spacecraft for r in result.rows}):
        picked = [i for i, r in enumerate(result.rows) if r.spacecraft == craft]
        chans = {result.rows[i].chan_id for i in picked}
        reference = [c for c in telemanom_reference(root, craft) if c.channel in chans]
        processings: list[tuple[str, list[ChannelCounts] | None]] = [
            ("telemanom's 2018 processing, batch, on these errors", result.batch),
            ("the default, streamed (the daemon's engine), on these errors", result.streamed),
            ("telemanom's published run (its own model)", None),
        ]
        if result.causal:
            processings.insert(
                1, ("telemanom's batches without hindsight (one batch late)", result.causal)
            )
        for name, counts in processings:
            chosen = reference if counts is None else [counts[i] for i in picked]
            m = summarise(chosen)
            lines.append(
                f"| {name} | {craft} | {len(chosen)} | {m.precision:.3f} | {m.recall:.3f} | "
                f"{m.f1:.3f} | {m.composite_f1:.3f} | {m.flagged_fraction:.1%} |"
            )
    return "\n".join(lines)


def plot_channel(root: Path, cache: Path, chan: str, out: Path) -> Path:
    """One channel: its values, telemanom's smoothed errors with what the batch form found,
    and the streamed default's score, threshold and episodes; labels in red."""
    import matplotlib.pyplot as plt  # the Agg backend: set by evaluation.plots

    ch = cached_channel(root, cache, chan, BatchConfig())
    test, found, lead, smoothed = ch.test, ch.found, ch.lead, ch.smoothed
    run = run_engine(Settings(), ch.model, chan, test, ch.scores)
    episodes = run.episodes()
    labelled = [
        seq
        for row in dataset_rows(root, "both")
        if row.chan_id == chan
        for seq in row.anomaly_sequences
    ]
    fig, axes = plt.subplots(3, 1, figsize=(12, 6.6), sharex=True)
    axes[0].plot(np.arange(len(test)), test[:, 0], lw=0.6, color="0.2")
    axes[0].set_ylabel("value")
    axes[0].set_title(f"{chan}: one model's errors, processed two ways (labels in red)")
    axes[1].plot(np.arange(len(smoothed)) + lead, smoothed, lw=0.7, color="0.2")
    axes[1].set_ylabel("smoothed error")
    axes[2].plot(
        np.asarray(run.end_seqs), np.asarray(run.scores), lw=0.5, color="0.2", label="score"
    )
    limits = np.asarray([np.nan if t is None else t for t in run.thresholds], dtype=float)
    axes[2].plot(np.asarray(run.end_seqs), limits, lw=0.9, color="tab:orange", label="threshold")
    axes[2].set_ylabel("score")
    axes[2].legend(loc="upper left", fontsize="x-small")
    for ax, spans, name in (
        (axes[1], found, "telemanom's 2018 processing, batch"),
        (axes[2], episodes, "the default, streamed"),
    ):
        c = count_channel(chan, labelled, spans, len(test))
        ax.set_title(
            f"{name}: TP {c.tp} FP {c.fp} FN {c.fn}, flagged {c.flagged_points / len(test):.1%}",
            fontsize="small",
        )
        for start, end in spans:
            ax.axvspan(start, end + 1, ymin=0, ymax=0.12, color="tab:blue", alpha=0.8, lw=0)
    for ax in axes:
        for start, end in labelled:
            ax.axvspan(start, end, color="tab:red", alpha=0.2, lw=0)
    axes[-1].set_xlabel("step (test split)")
    return save_figure(fig, out, dpi=100)


def cache_options(cache_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options every diagnostic on a score cache takes: --cache, --dataset, --channel
    (repeatable) and --data-root."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(
            [
                click.option(
                    "--cache",
                    type=click.Path(exists=True, file_okay=False, path_type=Path),
                    required=True,
                    help=cache_help,
                ),
                click.option(
                    "--dataset", type=click.Choice(["smap", "msl", "both"]), default="both"
                ),
                click.option(
                    "--channel", "channels", multiple=True, help="only these channels (repeatable)"
                ),
                click.option(
                    "--data-root",
                    type=click.Path(exists=True, file_okay=False, path_type=Path),
                    default=None,
                    help="SMAP/MSL folder (default: the settings' SD_DATA__ROOT)",
                ),
            ]
        ):
            command = option(command)
        return command

    return decorate


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@cache_options("a score cache of `evaluate --thresholds ... --score-cache` (raw errors)")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="with one --channel: draw both processings of it into this PNG",
)
@click.option(
    "--causal",
    is_flag=True,
    help="also score the batch form without hindsight: each batch of 70 judged once complete, "
    "no flat start, a fixed warm-up of 140 (docs/threshold-race.md, thirty-second look)",
)
def main(
    cache: Path,
    dataset: str,
    channels: tuple[str, ...],
    data_root: Path | None,
    plot: Path | None,
    causal: bool,
) -> None:
    """Score a model's cached test errors with telemanom's 2018 batch processing and with the
    streamed default, side by side with telemanom's published run (a diagnostic: test labels
    score, they choose nothing)."""
    root = data_root or Path(Settings().data.root)
    if plot is not None:
        if len(channels) != 1:
            raise click.BadParameter("needs exactly one --channel", param_hint="--plot")
        click.echo(plot_channel(root, cache, channels[0], plot))
        return
    result = run_batch(root, dataset, cache, list(channels) or None, causal)
    click.echo(batch_table(result, root))


if __name__ == "__main__":
    main()
