"""One channel, one model, several thresholds: where the choice of threshold made the difference.

    python -m stream_detector.evaluation.compare_plot --cache artifacts/cache/beatgan \\
        --grid docs/threshold-grid.json --channel T-1 --variant "ewma_sigma (default)" \\
        --variant "recent_max 5%, relearn 200, 3 of 5" --out docs/img/T-1.png

Reads the channel's checkpoint and raw scores from a `--score-cache` folder (made by
`evaluate --thresholds ... --score-cache`), replays them through the daemon's engine with each
variant, and draws the telemetry value above one panel per variant: score, threshold,
labelled ranges (red) and predicted episodes (blue), with the variant's counts in its title.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from stream_detector.data.smap_msl import load_labels, load_series
from stream_detector.evaluation.metrics import Span, count_channel
from stream_detector.evaluation.plots import save_figure
from stream_detector.evaluation.threshold_grid import load_grid, run_engine
from stream_detector.offline import OfflineRun
from stream_detector.serving import ServedModel
from stream_detector.settings import Settings
from stream_detector.training.checkpoint import load_checkpoint


def draw_run(ax: Axes, run: OfflineRun, labelled: Sequence[Span], length: int, name: str) -> None:
    """One panel: a run's scores and threshold on a log axis, the labelled ranges (red), its
    episodes (blue), and its counts against the labels in the title."""
    seqs = np.asarray(run.end_seqs)
    ax.plot(seqs, np.asarray(run.scores), lw=0.6, color="0.2", label="score")
    limits = np.asarray([np.nan if t is None else t for t in run.thresholds], dtype=float)
    ax.plot(seqs, limits, lw=0.9, color="tab:orange", label="threshold")
    for start, end in labelled:
        ax.axvspan(start, end, color="tab:red", alpha=0.2, lw=0)
    episodes = run.episodes()
    for start, end in episodes:
        ax.axvspan(start, end + 1, ymin=0, ymax=0.12, color="tab:blue", alpha=0.8, lw=0)
    c = count_channel(run.channel, labelled, episodes, length)
    ax.set_title(
        f"{name}: {len(episodes)} episodes, TP {c.tp} FP {c.fp} FN {c.fn}, "
        f"flagged {c.flagged_points / length:.1%}",
        fontsize="small",
    )
    positive = np.asarray(run.scores)[np.asarray(run.scores) > 0]
    ax.set_yscale("log")  # scores span orders of magnitude: a linear axis hides the quiet part
    if positive.size:
        ax.set_ylim(bottom=float(np.percentile(positive, 1)) / 2)
    ax.legend(loc="upper left", fontsize="x-small")


def value_panel(ax: Axes, test: np.ndarray, labelled: Sequence[Span], title: str) -> None:
    """The telemetry value the scores are of, with the labelled ranges (red)."""
    ax.plot(np.arange(len(test)), test[:, 0], lw=0.6, color="0.2")
    ax.set_ylabel("value")
    ax.set_title(title)
    for start, end in labelled:
        ax.axvspan(start, end, color="tab:red", alpha=0.2, lw=0)


def compare_thresholds(
    root: Path, cache: Path, grid: Path, channel: str, variants: list[str], out: Path
) -> Path:
    by_name = {v.name: v for v in load_grid(grid)}
    unknown = [name for name in variants if name not in by_name]
    if unknown:
        raise click.BadParameter(f"{unknown} not in {grid}; it has {sorted(by_name)}")
    model = ServedModel(load_checkpoint(cache / f"{channel}.pt", device="cpu"))
    with np.load(cache / f"{channel}.npz") as data:
        scores = data["test"]
    test = load_series(root, channel, "test")
    rows = [r for r in load_labels(root) if r.chan_id == channel]
    labelled = [seq for row in rows for seq in row.anomaly_sequences]
    fig, axes = plt.subplots(
        len(variants) + 1, 1, figsize=(12, 2.2 * (len(variants) + 1)), sharex=True
    )
    value_panel(
        axes[0],
        test,
        labelled,
        f"{channel}: {model.model_info.name} scores, judged by each threshold",
    )
    base = Settings()
    for ax, name in zip(axes[1:], variants, strict=True):
        run = run_engine(by_name[name].settings(base), model, channel, test, scores)
        draw_run(ax, run, labelled, len(test), name)
    axes[-1].set_xlabel("step (test split)")
    return save_figure(fig, out, dpi=100)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--cache", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True
)
@click.option("--grid", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--channel", required=True)
@click.option(
    "--variant", "variants", multiple=True, required=True, help="A variant name (repeat)."
)
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--data-root", type=click.Path(path_type=Path), default=None)
def main(
    cache: Path,
    grid: Path,
    channel: str,
    variants: tuple[str, ...],
    out: Path,
    data_root: Path | None,
) -> None:
    """Plot one channel's cached scores judged by several thresholds of a grid."""
    root = data_root or Settings().data.root
    click.echo(compare_thresholds(root, cache, grid, channel, list(variants), out))


if __name__ == "__main__":
    main()
