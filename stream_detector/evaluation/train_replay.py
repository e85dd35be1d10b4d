"""False episodes on a long clean stream: each threshold of a grid over every channel's whole
train split, replayed through the daemon's engine with the cached model.

A diagnostic for the threshold race's proxy. The race's rule sees false alarms only on the
held-out part of train and in the short injected runs, and there the fourteenth look's
pruning option and the default were about alike, while on the test streams one raised 9
false episodes on SMAP and the other 20 (docs/threshold-race.md). The whole train split is a longer
stream with no labels. Every episode on it is counted as false: SMAP/MSL's train splits are
meant to be nominal, though not all of them are clean. Most of train was fitted, so its errors
are smaller than a test stream's and the rates are a floor; what matters is how thresholds
order by them. It reads no test label, and it chooses nothing: whether such a rate belongs in
the rule is to be written down before it is used.

    python -m stream_detector.evaluation.train_replay --cache artifacts/cache/lstm_dt_np10 \\
        --thresholds docs/threshold-pruning.json
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from stream_detector.data.smap_msl import load_series
from stream_detector.evaluation.metrics import summarise
from stream_detector.evaluation.proxy_check import (
    MIN_TRANSFER,
    held_out_false_rate,
    unlabelled_alarm_rate,
)
from stream_detector.evaluation.runner import dataset_rows
from stream_detector.evaluation.telemanom_batch import cache_options
from stream_detector.evaluation.threshold_grid import (
    ThresholdVariant,
    VariantResult,
    load_grid,
    load_results,
    rank_correlation,
    raw_scores,
    run_engine,
)
from stream_detector.serving import ServedModel
from stream_detector.settings import Settings
from stream_detector.training.checkpoint import load_checkpoint


@dataclass
class ReplayCount:
    """One threshold's episodes over one data set's train splits."""

    episodes: int = 0
    steps: int = 0  # scored steps

    @property
    def per_1k(self) -> float:
        return 1000.0 * self.episodes / max(self.steps, 1)


def channel_crafts(root: Path, dataset: str, channels: Sequence[str] | None) -> dict[str, str]:
    """channel → its spacecraft, for the labelled channels of `dataset` (or those given), in
    file order."""
    crafts: dict[str, str] = {}
    for row in dataset_rows(root, dataset):
        if not channels or row.chan_id in channels:
            crafts.setdefault(row.chan_id, row.spacecraft)
    return crafts


def replay_train(
    root: Path,
    dataset: str,
    cache: Path,
    variants: Sequence[ThresholdVariant],
    channels: Sequence[str] | None = None,
    base: Settings | None = None,
) -> dict[str, dict[str, ReplayCount]]:
    """variant name → spacecraft → its episodes over the train splits of the cached channels.
    Each channel's train split is scored once by its cached model, then replayed per variant."""
    base = base or Settings()
    out: dict[str, dict[str, ReplayCount]] = {v.name: {} for v in variants}
    crafts = channel_crafts(root, dataset, channels)
    for chan, craft in tqdm(crafts.items(), desc="train replay", unit="channel"):
        if not (cache / f"{chan}.pt").exists():
            raise click.ClickException(f"{cache} has no model of {chan}")
        model = ServedModel(load_checkpoint(cache / f"{chan}.pt", device="cpu"))
        train = load_series(root, chan, "train")
        scores = raw_scores(base, model, chan, train)
        for variant in variants:
            run = run_engine(variant.settings(base), model, chan, train, scores)
            count = out[variant.name].setdefault(craft, ReplayCount())
            count.episodes += len(run.episodes())
            count.steps += len(scores)
    return out


@dataclass(frozen=True)
class ReplayAgreement:
    """How a replay's episode counts rank the variants of one data set, beside the held-out
    part's: against the test streams' false episodes (reads test labels), and against every
    episode of the test streams per 1,000 steps (reads none: `proxy-check`'s transfer test)."""

    n_variants: int
    with_test_false: float  # Spearman ρ of the replay's episodes and the test false episodes
    held_out_with_test_false: float  # the same ρ for the held-out part's episodes
    transfer: float  # ρ of the replay's episodes per 1k steps and the test streams' per 1k
    held_out_transfer: float  # the same ρ for the held-out part's false episodes per 1k

    @property
    def transfers(self) -> bool:
        return self.transfer >= MIN_TRANSFER


def replay_agreement(
    counts: dict[str, dict[str, ReplayCount]], results: dict[str, VariantResult]
) -> dict[str, ReplayAgreement]:
    """spacecraft → agreement over the variants in both `counts` and the grid's `results`
    (non-oracle). Its ρ with the test false episodes reads test labels, so it chooses
    nothing; its transfer ρ reads none, and is `proxy-check`'s test with this replay as the
    quiet stream in place of the held-out part."""
    out: dict[str, ReplayAgreement] = {}
    crafts = sorted({craft for by_craft in counts.values() for craft in by_craft})
    for craft in crafts:
        replay, held_out, test_false = [], [], []
        replay_rate, held_out_rate, test_rate = [], [], []
        for name, by_craft in counts.items():
            res = results.get(name)
            if res is None or res.oracle or craft not in by_craft:
                continue
            replay.append(float(by_craft[craft].episodes))
            replay_rate.append(by_craft[craft].per_1k)
            held_out_rate.append(held_out_false_rate(res, craft))
            test_rate.append(unlabelled_alarm_rate(res, craft))
            held_out.append(
                float(
                    sum(
                        n
                        for n, row in zip(
                            res.validation_by_channel, res.validation_rows, strict=True
                        )
                        if row.spacecraft == craft
                    )
                )
            )
            rows = [c for c, r in zip(res.counts, res.rows, strict=True) if r.spacecraft == craft]
            test_false.append(float(summarise(rows).fp))
        out[craft] = ReplayAgreement(
            len(replay),
            rank_correlation(replay, test_false),
            rank_correlation(held_out, test_false),
            rank_correlation(replay_rate, test_rate),
            rank_correlation(held_out_rate, test_rate),
        )
    return out


def agreement_lines(agreement: dict[str, ReplayAgreement], stream: str) -> str:
    lines = [
        "transfer to the test streams' episodes per 1,000 steps (reads no label; proxy-check's "
        f"test, bar ≥ {MIN_TRANSFER}):",
    ]
    for craft, a in agreement.items():
        verdict = "passes" if a.transfers else "fails"
        lines.append(
            f"  {craft}: ρ {a.transfer:.2f} for the {stream} ({verdict}), "
            f"{a.held_out_transfer:.2f} for the held-out part ({a.n_variants} variants)"
        )
    lines.append(
        "agreement with the test streams' false episodes (reads test labels; chooses nothing):"
    )
    for craft, a in agreement.items():
        lines.append(
            f"  {craft}: ρ {a.with_test_false:.2f} for the {stream}, "
            f"{a.held_out_with_test_false:.2f} for the held-out part ({a.n_variants} variants)"
        )
    return "\n".join(lines)


def replay_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options both replays take: --thresholds (the grid) and --against (a grid report to
    rank the replay's counts against)."""
    command = click.option(
        "--against",
        type=click.Path(exists=True, path_type=Path),
        default=None,
        help="a grid's results (an --out folder of `evaluate --thresholds` or `grid-report`) "
        "over the same thresholds: also print how the replay ranks them against the test "
        "streams' episodes per 1,000 steps (proxy-check's transfer test, no label read) and "
        "against their false episodes (reads test labels), beside the held-out part",
    )(command)
    return click.option(
        "--thresholds",
        "grid",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        required=True,
        help="a threshold grid (JSON), as for `evaluate --thresholds`",
    )(command)


def replay_table(counts: dict[str, dict[str, ReplayCount]], stream: str = "train") -> str:
    lines = [
        f"| threshold | data | episodes on {stream} | scored steps | per 1,000 steps |",
        "|---|---|---:|---:|---:|",
    ]
    crafts = sorted({craft for by_craft in counts.values() for craft in by_craft})
    for craft in crafts:
        for name, by_craft in counts.items():
            c = by_craft.get(craft)
            if c is not None:
                lines.append(f"| {name} | {craft} | {c.episodes} | {c.steps:,} | {c.per_1k:.2f} |")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@replay_options
@cache_options("a score cache of `evaluate --thresholds ... --score-cache` (its checkpoints)")
def main(
    cache: Path,
    grid: Path,
    against: Path | None,
    dataset: str,
    channels: tuple[str, ...],
    data_root: Path | None,
) -> None:
    """Replay every channel's whole train split through each threshold of a grid and count
    its episodes, all presumed false (label-free; a diagnostic that chooses nothing)."""
    from stream_detector.cli import limit_torch_threads

    settings = Settings()
    limit_torch_threads(settings)
    root = data_root or Path(settings.data.root)
    counts = replay_train(root, dataset, cache, load_grid(grid), list(channels) or None, settings)
    click.echo(replay_table(counts))
    if against is not None:
        click.echo(agreement_lines(replay_agreement(counts, load_results(against)), "train"))


if __name__ == "__main__":
    main()
