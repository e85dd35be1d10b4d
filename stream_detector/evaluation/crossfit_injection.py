"""A key on long streams: anomalies injected late into the cross-fitted halves of train.

The threshold race's rules judge a variant by the event F1 on anomalies injected into the
held-out part of train: runs of a few hundred steps after about 250 of context. A strategy
that needs a long warm-up (`telemanom_batches` flags nothing until its window holds about
four error buffers) cannot show there what it does once warm, and a daemon is warm almost
all of its life (docs/threshold-race.md, thirty-third and thirty-fourth looks).

Here the runs are the cross-fitted halves of `crossfit_replay`: a fold model trained on one
half of a channel's train split scores the other half, out of sample, from its start. Each
half gets one anomaly as late as it can hold one, eight times over (the held-out key's kinds
and directions, copy by copy), is scored by its fold model and replayed through the daemon's
engine with every variant. Every episode that misses the anomaly counts as false, so a
variant noisy anywhere in the half pays in precision. No test label is read.

The runs take the place of a grid's injected runs (`with_key`), so the rules and checks that
read those (`race_decision`, `check_proxy`) read this key unchanged.

    python -m stream_detector.evaluation.crossfit_injection run --dataset both \\
        --cache artifacts/cache/telemanom-recipe --thresholds docs/threshold-race-batches.json \\
        --out artifacts/eval/crossfit-injected
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import zlib
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from stream_detector.data.smap_msl import LabelRow
from stream_detector.evaluation.crossfit_replay import (
    Fold,
    channel_folds,
    fold_store,
)
from stream_detector.evaluation.injection import Injected, inject_anomalies
from stream_detector.evaluation.metrics import ChannelCounts, count_channel
from stream_detector.evaluation.proxy_check import (
    MAX_VOLUME,
    MIN_RELIABILITY,
    MIN_TRANSFER,
    check_proxy,
    copy_numbers,
    runs_at,
)
from stream_detector.evaluation.replay_counts import decision_lines, load_counts
from stream_detector.evaluation.runner import dataset_rows
from stream_detector.evaluation.telemanom_batch import cache_options
from stream_detector.evaluation.threshold_grid import (
    DECISION_MARGIN,
    INJECTION_COPIES,
    INJECTION_LENGTH,
    INJECTION_MARGIN,
    INJECTION_WARMUP,
    ThresholdVariant,
    VariantResult,
    copy_kind_and_sign,
    detector_margins,
    incumbent_variant,
    injected_crafts,
    join_variants,
    judge_injected,
    label_free_scores,
    load_grid,
    load_results,
    merge_results,
    raw_scores,
    run_engine,
    save_results,
)
from stream_detector.evaluation.train_replay import replay_agreement
from stream_detector.serving import ServedModel
from stream_detector.settings import Settings

__all__ = [
    "LATE_KEY",
    "late_injection",
    "load_late",
    "run_late_injection",
    "save_late",
    "with_key",
]

# The fold cache's key of one copy's scores: change it whenever the injection changes.
LATE_KEY = "late_v1_copy{copy}"
# With --warm, a fold's first part must hold at least this many scores: the race grid's
# longest warm-up (docs/threshold-race.md, thirty-fifth look).
WARM_MIN_SCORES = 500


def late_injection(
    half: np.ndarray, chan: str, fold: int, copy: int, window: int
) -> Injected | None:
    """One anomaly in `half`, ending `INJECTION_MARGIN` steps before its end: of the
    channel's kinds in turn (the held-out key's order, `held_out_injection`), going up in the
    first round of kinds and down in the second. None if it would start before
    ``window + INJECTION_WARMUP`` steps (too little warm-up to judge a threshold by), or if the
    channel's first column is constant in the half (no scale to size an anomaly by)."""
    t = len(half)
    # inject_anomalies places slot 0 at lead + margin: this lead leaves exactly one slot,
    # the last one the half can hold.
    lead = t - INJECTION_LENGTH - 2 * INJECTION_MARGIN
    if lead + INJECTION_MARGIN < window + INJECTION_WARMUP:
        return None
    column = half[:, 0]
    if np.ptp(column) <= 0:
        return None
    return inject_anomalies(
        half,
        spread=float(np.std(column)),
        lead=lead,
        length=INJECTION_LENGTH,
        margin=INJECTION_MARGIN,
        seed=zlib.crc32(f"{chan}/fold{fold}/late/{copy}".encode()),
        **copy_kind_and_sign(chan, copy),
    )


def judge_warm(
    settings: Settings,
    model: ServedModel,
    chan: str,
    warm: Fold,
    injected: Injected,
    scores: np.ndarray,
) -> ChannelCounts:
    """The engine over `warm`'s half as its model scored it, a one-step gap, then `injected`
    with its `scores`, on one channel state; counted on the injected part alone (an episode
    open across the gap counts from the gap). `model` stands for both parts' scorers: only
    its window, stride and prior are read, and the prior is the first part's."""
    values = np.concatenate([warm.scored, injected.values])
    run = run_engine(
        settings,
        model,
        chan,
        values,
        np.concatenate([warm.scores, scores]),
        breaks=(len(warm.scored),),
    )
    first = len(warm.scored) + 1  # the injected part's first sequence number
    found = [(max(s, first) - first, e - first) for s, e in run.episodes() if e >= first]
    return count_channel(chan, injected.sequences, found, len(injected.values))


def run_late_injection(
    root: Path,
    dataset: str,
    cache: Path,
    variants: Sequence[ThresholdVariant],
    channels: Sequence[str] | None = None,
    base: Settings | None = None,
    copies: int = INJECTION_COPIES,
    warm: bool = False,
    warm_min_scores: int = WARM_MIN_SCORES,
) -> tuple[dict[str, VariantResult], list[str]]:
    """variant → its injected runs over every fold's copies (only the injected fields are
    filled), and the halves left out ("chan fold N"). The fold models are `crossfit_replay`'s
    (trained there if missing); each copy's scores are kept beside theirs.

    With `warm` (the thirty-fifth look), each injected half comes after the channel's other
    half as the other fold's model scored it (`judge_warm`); a fold whose other half has
    fewer than `warm_min_scores` scores is left out."""
    base = base or Settings()
    recipe, store = fold_store(cache)
    first_row: dict[str, LabelRow] = {}
    for row in dataset_rows(root, dataset):
        if not channels or row.chan_id in channels:
            first_row.setdefault(row.chan_id, row)
    results = {v.name: VariantResult() for v in variants}
    settings_of = {v.name: v.settings(base) for v in variants}
    left_out: list[str] = []
    for chan, row in tqdm(first_row.items(), desc="late injections", unit="channel"):
        folds = channel_folds(root, chan, recipe, store, base)
        if not folds:
            left_out.append(f"{chan} (train too short to halve)")
        for fold in folds:
            other = folds[1 - fold.index] if len(folds) == 2 else None
            if warm and (other is None or len(other.scores) < warm_min_scores):
                left_out.append(f"{chan} fold {fold.index} (under {warm_min_scores} to warm on)")
                continue
            arrays = dict(fold.cached)
            model = ServedModel(fold.checkpoint)
            injections: list[tuple[Injected, np.ndarray]] = []
            added = False
            for copy in range(copies):
                injected = late_injection(
                    fold.scored, chan, fold.index, copy, fold.checkpoint.window
                )
                if injected is None:
                    continue
                name = LATE_KEY.format(copy=copy)
                if name not in arrays:
                    arrays[name] = raw_scores(base, model, chan, injected.values)
                    added = True
                injections.append((injected, arrays[name]))
            if not injections:
                left_out.append(f"{chan} fold {fold.index}")
                continue
            if added:
                store.save(f"{chan}.fold{fold.index}", fold.checkpoint, arrays)
            if warm and other is not None:
                # The first part's model scores first: its prior starts the threshold.
                model = ServedModel(other.checkpoint)
            for variant in variants:
                settings = settings_of[variant.name]
                result = results[variant.name]
                for injected, scores in injections:
                    if warm and other is not None:
                        counted = judge_warm(settings, model, chan, other, injected, scores)
                    else:
                        counted = judge_injected(settings, model, chan, injected, scores)
                    result.injected.append(counted)
                    result.injected_rows.append(row)
                    result.injected_kinds.append(list(injected.kinds))
    return results, left_out


# The rules that read a late key, and where docs/threshold-race.md wrote each down.
RULES = {
    "v6": "docs/threshold-race.md, thirty-fourth look: v5 on the late key",
    "v7": "docs/threshold-race.md, thirty-fifth look: v5 on the late key, warmed on the other half",
    "v7s": "docs/threshold-race.md, thirty-seventh look: v7 judged after the gap has settled",
}

RECORD_FORMAT = "stream-detector late key v1"
# The integer fields of a ChannelCounts, in the order a record stores them.
_SUMMED = (
    "tp",
    "fn",
    "fp",
    "n_points",
    "flagged_points",
    "true_flagged_points",
    "labelled_points",
    "adjusted_tp_points",
)


def _copy_sums(res: VariantResult) -> dict[str, list[ChannelCounts]]:
    """channel → one ChannelCounts per copy, summed over the channel's folds. Every number
    the rules and checks read is a sum over runs, per channel or per copy's half, so these
    sums give the same key, margins and halves as the runs themselves."""
    out: dict[str, list[ChannelCounts]] = {}
    for counts, row, number in zip(res.injected, res.injected_rows, copy_numbers(res), strict=True):
        copy = number % INJECTION_COPIES
        copies = out.setdefault(row.chan_id, [])
        while len(copies) <= copy:
            copies.append(ChannelCounts(row.chan_id, 0, [], [], 0, 0, 0, 0, 0, 0, 0))
        summed = copies[copy]
        for name in _SUMMED:
            setattr(summed, name, getattr(summed, name) + getattr(counts, name))
        summed.delays.extend(counts.delays)
    return out


def save_late(path: Path, late: dict[str, VariantResult], source: str = "") -> Path:
    """Record the late key's runs, summed per channel and copy (`_copy_sums`), as gzipped
    JSON: a few hundred kB where the runs are megabytes, and what it takes to print the key
    and rule v6's verdict again once the fold models are gone."""
    crafts: dict[str, str] = {}
    variants: dict[str, dict[str, list[list[object]]]] = {}
    for name, res in late.items():
        for row in res.injected_rows:
            crafts.setdefault(row.chan_id, row.spacecraft)
        variants[name] = {
            chan: [[*(getattr(c, f) for f in _SUMMED), c.delays] for c in copies]
            for chan, copies in _copy_sums(res).items()
        }
    document = {"format": RECORD_FORMAT, "source": source, "crafts": crafts, "variants": variants}
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        json.dump(document, handle, separators=(",", ":"))
    return path


def load_late(path: Path) -> dict[str, VariantResult]:
    """What `save_late` recorded, as injected runs (one per channel and copy)."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        document = json.load(handle)
    if document.get("format") != RECORD_FORMAT:
        raise ValueError(f"{path} is not a record of the late key ({RECORD_FORMAT})")
    crafts = document["crafts"]
    out: dict[str, VariantResult] = {}
    for name, by_channel in document["variants"].items():
        res = out[name] = VariantResult()
        for chan, copies in by_channel.items():
            row = LabelRow(chan, crafts[chan], [], [], 0)
            for entry in copies:
                numbers = dict(zip(_SUMMED, entry[: len(_SUMMED)], strict=True))
                res.injected.append(
                    ChannelCounts(
                        chan, labelled=[], predicted=[], delays=list(entry[-1]), **numbers
                    )
                )
                res.injected_rows.append(row)
                res.injected_kinds.append([])
    return out


def judged_from(late: dict[str, VariantResult], start: int) -> dict[str, VariantResult]:
    """The runs counted again with each injected half judged from its step `start` on: an
    episode that ends before it is dropped, one that runs into it is cut there, and the
    anomalies are counted as they were (each run's episodes come from its `predicted`
    spans, so nothing runs again). Refused if an anomaly starts before `start`."""
    out: dict[str, VariantResult] = {}
    for name, res in late.items():
        counted = []
        for c in res.injected:
            if any(s < start for s, _ in c.labelled):
                raise ValueError(f"{c.channel}: an injected anomaly starts before step {start}")
            kept = [(max(s, start), e) for s, e in c.predicted if e >= start]
            counted.append(count_channel(c.channel, c.labelled, kept, c.n_points))
        out[name] = dataclasses.replace(res, injected=counted)
    return out


def join_shares(
    parts: Sequence[dict[str, VariantResult]], channel_order: Sequence[str]
) -> dict[str, VariantResult]:
    """Runs of one grid's shares of the channels merged (`merge_results`), and runs of other
    variants over the same channels joined to them (`join_variants`): a variant added to a
    grid is judged alone, as `grid-report` joins it."""
    groups: dict[tuple[str, ...], list[dict[str, VariantResult]]] = {}
    for part in parts:
        groups.setdefault(tuple(part), []).append(part)
    merged = [g[0] if len(g) == 1 else merge_results(g, channel_order) for g in groups.values()]
    return merged[0] if len(merged) == 1 else join_variants(merged)


def load_shares(shares: Sequence[Path], root: Path) -> dict[str, VariantResult]:
    """`run`'s --out folders or `--save` records, as one set of runs (`join_shares`) in the
    label file's channel order under `root`."""
    order = list(dict.fromkeys(r.chan_id for r in dataset_rows(root, "both")))
    return join_shares([load_results(s) if s.is_dir() else load_late(s) for s in shares], order)


def with_key(
    grid: dict[str, VariantResult], late: dict[str, VariantResult]
) -> dict[str, VariantResult]:
    """A grid's results with `late`'s injected runs in place of its own: the test runs and
    the held-out clean runs stay, so the rules and `check_proxy` read the late key. Every
    non-oracle variant of the grid must have late runs."""
    missing = [n for n, r in grid.items() if not r.oracle and n not in late]
    if missing:
        raise ValueError(f"no late injected runs of: {', '.join(missing)}")
    return {
        name: res
        if res.oracle
        else dataclasses.replace(
            res,
            injected=list(late[name].injected),
            injected_rows=list(late[name].injected_rows),
            injected_kinds=list(late[name].injected_kinds),
        )
        for name, res in grid.items()
    }


def key_report(
    late: dict[str, VariantResult],
    grid: dict[str, VariantResult] | None,
    counts_files: Sequence[Path],
    variants: Sequence[ThresholdVariant],
    settings: Settings,
    rule: str = "v6",
) -> str:
    """The thirty-fourth look's checks of the late key and its rule's verdict (`RULES`: v6
    for the late key, v7 for it warmed on the other half), then the key beside the held-out
    one per variant. Reads no test label: the test runs enter only as unlabelled volume
    (flagged share, episodes per 1,000 steps).

    Without the grid's test runs (`grid` None) the checks, which read them, are not computed
    and the verdict is the rule's decision alone: the quiet filter, the pick and its paired
    draws (the forty-fourth look's two-way test, which needs no race of the new variants)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    counts, _, stream = load_counts(counts_files, variants)
    if grid is None:
        missing = [v.name for v in variants if v.name not in late]
        if missing:
            raise ValueError(f"no late injected runs of: {', '.join(missing)}")
        keyed = {v.name: late[v.name] for v in variants}
        checks = {}
        transfer = {}
        lines = ["no test runs given (--against): the key's checks are not computed"]
    else:
        keyed = with_key(grid, late)
        checks = check_proxy(keyed)
        transfer = replay_agreement(counts, grid)
        lines = [
            f"| data | variants | ρ of the halves | reliability (bar ≥ {MIN_RELIABILITY}) "
            f"| volume ρ (bar ≤ {MAX_VOLUME}) | quiet half's transfer ρ (bar ≥ {MIN_TRANSFER}) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
    passed = True
    for craft, c in checks.items():
        moved = transfer.get(craft)
        transfers = moved is not None and moved.transfers
        passed = passed and c.reliable and c.ignores_volume and transfers
        lines.append(
            f"| {craft} | {len(c.variants)} | {c.half_rho:.2f} | {c.reliability:.2f} "
            f"({'passes' if c.reliable else 'fails'}) | {c.volume:.2f} "
            f"({'passes' if c.ignores_volume else 'fails'}) | "
            + (f"{moved.transfer:.2f} ({'passes' if transfers else 'fails'})" if moved else "none")
            + " |"
        )
    incumbent = incumbent_variant(variants, settings)
    if incumbent is None:
        raise ValueError("the grid has no variant the settings build")
    verdict = decision_lines(counts, keyed, incumbent).replace(
        "rule v5 (docs/threshold-race.md, thirtieth look;", f"rule {rule} ({RULES[rule]};"
    )
    if grid is None:
        judged = f"the decision alone, its checks not computed ({stream} as the quiet half)"
    else:
        judged = (
            f"every check passes: rule {rule} may judge"
            if passed
            else f"a check fails: rule {rule} may not judge"
        ) + f" ({stream} as the quiet half)"
    lines += ["", judged, verdict]
    late_scores = label_free_scores(keyed)
    held_scores = label_free_scores(grid) if grid is not None else {}
    crafts = sorted(checks) if grid is not None else sorted(injected_crafts(keyed))
    lines += [
        "",
        "| threshold | "
        + " | ".join(f"late key {c} | held-out key {c} | episodes/1k {stream} {c}" for c in crafts)
        + " |",
        "|---|" + "---:|" * (3 * len(crafts)),
    ]
    for name, res in (grid if grid is not None else keyed).items():
        if res.oracle:
            continue
        cells = []
        for craft in crafts:
            late_f1 = late_scores[name].get(craft)
            held = held_scores.get(name, {}).get(craft)
            replayed = counts.get(name, {}).get(craft)
            cells += [
                f"{late_f1.injected_f1:.3f}" if late_f1 else "",
                f"{held.injected_f1:.3f}" if held else "",
                f"{replayed.per_1k:.3f}" if replayed else "",
            ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _counts_files(given: Path) -> list[Path]:
    """A recorded counts file, or every one in a folder (a shell glob after ``--counts``
    would hand all but the first file to the shares)."""
    if not given.is_dir():
        return [given]
    found = sorted(given.glob("*.json"))
    if not found:
        raise ValueError(f"no recorded counts (*.json) in {given}")
    return found


_thresholds_option = click.option(
    "--thresholds",
    "grid",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="a threshold grid (JSON), as for `evaluate --thresholds` (`report`: the one the "
    "shares were run with)",
)


# `report` and `compare` read the label file only for the channels' order.
_data_root_option = click.option(
    "--data-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="SMAP/MSL folder (default: the settings' SD_DATA__ROOT), for the channels' order",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """A label-free key on long streams: one anomaly injected late into each cross-fitted
    half of train, scored by its fold model and judged by every threshold of a grid."""


@main.command("run")
@_thresholds_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="folder for the injected runs (grid-results.pkl, read by `report`)",
)
@click.option(
    "--shard",
    default=None,
    metavar="I/N",
    help="only every N-th channel, starting at the I-th (0-based): N processes score in "
    "parallel, and `report` merges their --out folders",
)
@click.option(
    "--warm",
    is_flag=True,
    help="judge each injected half after the channel's other half, as the other fold's "
    "model scored it (the thirty-fifth look): every strategy judged in its steady state",
)
@cache_options(
    "a score cache whose crossfit/ folder holds the fold models (`crossfit_replay` trains "
    "them if missing)"
)
def run_command(
    grid: Path,
    out: Path,
    shard: str | None,
    warm: bool,
    cache: Path,
    dataset: str,
    channels: tuple[str, ...],
    data_root: Path | None,
) -> None:
    """Inject, score and judge: one run per fold and copy, per variant of the grid."""
    from stream_detector.cli import limit_torch_threads, selected_channels

    settings = Settings()
    limit_torch_threads(settings)
    root = data_root or Path(settings.data.root)
    selected = selected_channels(root, dataset, channels, shard)
    try:
        results, left_out = run_late_injection(
            root, dataset, cache, load_grid(grid), selected, settings, warm=warm
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    save_results(results, out / "grid-results.pkl")
    (out / "left-out.txt").write_text("".join(f"{item}\n" for item in left_out))
    runs = len(next(iter(results.values())).injected) if results else 0
    click.echo(f"{runs} injected runs per variant into {out}; left out: {len(left_out)}")
    for item in left_out:
        click.echo(f"  left out: {item}")


@main.command("report")
@click.argument("shares", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@_thresholds_option
@click.option(
    "--against",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="the grid's results on the test streams (`evaluate --thresholds` or `grid-report`), "
    "which the key's checks read; without it the checks are not computed and the verdict is "
    "the rule's decision alone",
)
@click.option(
    "--counts",
    "counts_files",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="the cross-fitted train's recorded counts (`crossfit_replay --save-counts`), the "
    "quiet half: a file, or a folder of them (*.json); repeatable",
)
@_data_root_option
@click.option(
    "--save",
    "save_to",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="also record the merged runs, summed per channel and copy, in FILE (gzipped JSON), "
    "which `report` reads in place of the shares once the fold models are gone",
)
@click.option(
    "--rule",
    type=click.Choice(sorted(RULES)),
    default="v6",
    show_default=True,
    help="the rule the verdict is named for: v6 for `run`'s late key, v7 for `run --warm`'s, "
    "v7s for that counted with --judge-from",
)
@click.option(
    "--judge-from",
    type=click.IntRange(min=0),
    default=None,
    metavar="STEP",
    help="judge each injected half from its step STEP on (episodes before it dropped, those "
    "running into it cut): the thirty-seventh look's settled count of `run --warm`'s shares "
    "(needs the shares: a record keeps no episodes)",
)
def report_command(
    shares: tuple[Path, ...],
    grid: Path,
    against: Path | None,
    counts_files: tuple[Path, ...],
    data_root: Path | None,
    save_to: Path | None,
    rule: str,
    judge_from: int | None,
) -> None:
    """Merge `run`'s shares (their --out folders, or files `--save` recorded; runs of other
    variants over the same channels are joined) and print the key's checks, the rule's
    verdict and the key per variant (reads no test label)."""
    settings = Settings()
    try:
        late = load_shares(shares, data_root or Path(settings.data.root))
        if judge_from is not None:
            if not all(s.is_dir() for s in shares):
                raise ValueError("--judge-from needs the shares: a record keeps no episodes")
            late = judged_from(late, judge_from)
        if save_to is not None:
            save_late(save_to, late, source=" ".join(str(s) for s in shares))
        files = [f for given in counts_files for f in _counts_files(given)]
        grid_results = load_results(against) if against is not None else None
        text = key_report(late, grid_results, files, load_grid(grid), settings, rule)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(text, nl=False)


def common_channels(
    first: VariantResult, second: VariantResult
) -> tuple[VariantResult, VariantResult, list[str]]:
    """Both detectors' runs on the channels where each has the same number of runs (a half
    one detector's window leaves out, the other's may keep), and the channels dropped."""

    def per_channel(res: VariantResult) -> dict[str, int]:
        counted: dict[str, int] = {}
        for row in res.injected_rows:
            counted[row.chan_id] = counted.get(row.chan_id, 0) + 1
        return counted

    a, b = per_channel(first), per_channel(second)
    kept = {c for c in a if b.get(c) == a[c]}
    dropped = sorted((set(a) | set(b)) - kept)

    def only(res: VariantResult) -> VariantResult:
        return runs_at(res, [i for i, r in enumerate(res.injected_rows) if r.chan_id in kept])

    return only(first), only(second), dropped


def compare_report(
    first: VariantResult, second: VariantResult, names: tuple[str, str], variant: str
) -> str:
    """Two detectors under one threshold on a late key: each one's key per data set, and how
    often the first stays ahead in paired draws of the channels (`detector_margins`, the
    written rules' test for a detector). Label-free."""
    a, b, dropped = common_channels(first, second)
    scores = label_free_scores({names[0]: a, names[1]: b})
    lines = [
        f"Under `{variant}`:",
        "",
        "| detector | data | injected anomalies | key (injected F1) | injected composite F1 |",
        "|---|---|---:|---:|---:|",
    ]
    for name, res in zip(names, (a, b), strict=True):
        for craft, score in scores[name].items():
            injected = sum(
                c.tp + c.fn
                for c, r in zip(res.injected, res.injected_rows, strict=True)
                if r.spacecraft == craft
            )
            lines.append(
                f"| {name} | {craft} | {injected} | {score.injected_f1:.3f} "
                f"| {score.injected_composite_f1:.3f} |"
            )
    ahead = ", ".join(f"{k} {v:.1%}" for k, v in detector_margins(a, b).items())
    lines += [
        "",
        f"`{names[0]}` stays ahead of `{names[1]}` on the key in {ahead} of 1,000 paired draws "
        f"of the channels (the bar for a change of detector: {DECISION_MARGIN:.0%} on each).",
    ]
    if dropped:
        lines.append(f"Left out (not the same runs for both): {', '.join(dropped)}.")
    return "\n".join(lines) + "\n"


@main.command("compare")
@click.option(
    "--first",
    "first_shares",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="the first detector's `run` shares or `--save` records (repeatable)",
)
@click.option(
    "--second",
    "second_shares",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="the second detector's, run with the same grid and the same --warm",
)
@_thresholds_option
@click.option(
    "--variant",
    default=None,
    help="the threshold to compare them under [default: the grid's variant the current "
    "settings build, the default configuration]",
)
@click.option("--names", nargs=2, default=("first", "second"), show_default=True)
@_data_root_option
def compare_command(
    first_shares: tuple[Path, ...],
    second_shares: tuple[Path, ...],
    grid: Path,
    variant: str | None,
    names: tuple[str, str],
    data_root: Path | None,
) -> None:
    """Two detectors under one threshold on the late key: the written rules' pairwise test
    that a pick on another detector has to pass before it becomes the default."""
    settings = Settings()
    root = data_root or Path(settings.data.root)
    name = variant or incumbent_variant(load_grid(grid), settings)
    if name is None:
        raise click.BadParameter(
            "no variant of the grid is the settings': name one", param_hint="--variant"
        )
    try:
        runs = [load_shares(shares, root) for shares in (first_shares, second_shares)]
        if any(name not in run for run in runs):
            raise ValueError(f"variant {name!r} is not in both detectors' runs")
        text = compare_report(runs[0][name], runs[1][name], names, name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(text, nl=False)


if __name__ == "__main__":
    main()
