"""Many thresholds, one model: train and score each channel once, judge the scores many ways.

Every variant runs through the daemon's own engine (threshold strategy + episode rules) in
stream order; only the model's window scores are computed once and replayed, since they do
not depend on the threshold. Beside the test metrics, each variant's alarm rate on the last
part of the *train* split (validation; no labels there, every episode presumed false) is
reported, so a variant can be chosen without looking at test labels.

With a ``cache`` folder each channel's checkpoint and raw window scores (test and
validation) are kept there, and a later grid with the same recipe reuses them instead of
training again: trying a new threshold costs seconds per channel, not a training run. The
cache is keyed by the recipe; a different recipe refuses a folder made by another. Each
channel's scores also carry the scorer that made them (the detector's kind and all its
hyperparameters, defaults included): scores made another way, or before the mark existed,
are scored again from the cached checkpoint, never reused.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from stream_detector.data.smap_msl import LabelRow, load_series
from stream_detector.engine import ChannelState, ScoringModel
from stream_detector.evaluation.calibrate import f1_optimal_threshold, fpr_target_threshold
from stream_detector.evaluation.injection import KINDS, Injected, inject_anomalies
from stream_detector.evaluation.metrics import ChannelCounts, EventMetrics, count_channel, summarise
from stream_detector.evaluation.reference import telemanom_reference
from stream_detector.evaluation.runner import (
    ModelRecipe,
    dataset_rows,
    held_out_start,
    point_labels,
    train_channel,
)
from stream_detector.offline import OfflineRun, run_offline
from stream_detector.priming import ReplayedScores
from stream_detector.serving import ServedModel
from stream_detector.settings import AlertSettings, Settings, ThresholdSettings
from stream_detector.thresholds.base import build_threshold
from stream_detector.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

# Windows of train before the held-out part, for the threshold's warm-up on injected runs.
INJECTION_WARMUP = 250
# The held-out injection's anomalies: 150 steps long, at least 100 normal steps apart.
# v1 (40 long, 60 apart) let one episode, with its error buffer and lead of up to 99 steps
# each, span neighbouring anomalies and score a hit for each: the proxy paid the longest
# buffers for coverage that came from the spacing. 100 apart, neither can reach the next;
# 150 long is near the labels' median length (121), against v1's 40 (docs/threshold-race.md,
# "Fifth look").
INJECTION_LENGTH = 150
INJECTION_MARGIN = 100
# The cache key of the injected run's scores: change it whenever the injection changes.
INJECTED_KEY = "injected_v2"
# Each held-out part is injected this many times, with different seeds. One injection gives
# a data set a few dozen anomalies, and the eighth look's choice between two models then came
# down to one of them (docs/threshold-race.md, "Ninth look").
INJECTION_COPIES = 8
# One anomaly per copy, in a slot drawn at random, the kinds in turn: with every slot filled,
# an episode could run from one injected anomaly into the next and be counted a find of both
# (a tenth of MSL's finds in the ninth look). Off, each copy fills every slot, and copy 0 is
# the injection of INJECTED_KEY.
ONE_ANOMALY_PER_COPY = True
# The cache key of the scorer that made a channel's cached scores.
SCORER_KEY = "scorer"


@dataclass(frozen=True)
class ThresholdVariant:
    name: str
    threshold: dict[str, Any]
    alerts: dict[str, Any] = field(default_factory=dict)

    def settings(self, base: Settings) -> Settings:
        return base.model_copy(
            update={
                "threshold": ThresholdSettings(**self.threshold),
                "alerts": AlertSettings(**{**base.alerts.model_dump(), **self.alerts}),
            }
        )


def load_grid(path: Path) -> list[ThresholdVariant]:
    """A JSON list of {"name", "threshold": {...ThresholdSettings}, "alerts": {...}}."""
    entries = json.loads(Path(path).read_text())
    variants = [ThresholdVariant(e["name"], e["threshold"], e.get("alerts", {})) for e in entries]
    if len({v.name for v in variants}) != len(variants):
        raise ValueError(f"{path}: variant names must be unique")
    return variants


@dataclass
class VariantResult:
    counts: list[ChannelCounts] = field(default_factory=list)
    rows: list[LabelRow] = field(default_factory=list)
    oracle: bool = False  # fitted on the test labels: an upper bound, not a result
    # Label-free: each channel's held-out train part with synthetic anomalies injected, one
    # run per copy of the injection (`INJECTION_COPIES`), a channel's copies side by side.
    injected: list[ChannelCounts] = field(default_factory=list)
    injected_rows: list[LabelRow] = field(default_factory=list)
    # The kind of each injected anomaly, per run in injected_rows order.
    injected_kinds: list[list[str]] = field(default_factory=list)
    # Per channel, in validation_rows order: the clean held-out run's episodes and steps.
    validation_rows: list[LabelRow] = field(default_factory=list)
    validation_by_channel: list[int] = field(default_factory=list)
    validation_steps_by_channel: list[int] = field(default_factory=list)

    @property
    def validation_episodes(self) -> int:
        return sum(self.validation_by_channel)

    @property
    def validation_steps(self) -> int:
        return sum(self.validation_steps_by_channel)


def run_engine(
    engine_settings: Settings,
    model: ScoringModel,
    chan: str,
    series: np.ndarray,
    scores: np.ndarray | None,
    breaks: Sequence[int] = (),
    state: ChannelState | None = None,
) -> OfflineRun:
    from stream_detector.app import build_engine

    served: ScoringModel = model if scores is None else ReplayedScores(model, scores)
    engine = build_engine(engine_settings, served)
    engine.emit_scores = True
    return run_offline(engine, chan, series, steps_per_record=10, breaks=breaks, state=state)


def raw_scores(base: Settings, model: ScoringModel, chan: str, series: np.ndarray) -> np.ndarray:
    """The model's own window scores, in stream order (before any calibration)."""
    plain = base.model_copy(
        update={"threshold": base.threshold.model_copy(update={"calibration": "none"})}
    )
    return np.asarray(run_engine(plain, model, chan, series, None).scores, dtype=np.float32)


ORACLE_KINDS = frozenset({"f1_optimal", "fpr_target"})


def _oracle_settings(
    variant: ThresholdVariant,
    base: Settings,
    model: ScoringModel,
    chan: str,
    test: np.ndarray,
    scores: np.ndarray,
    rows: Sequence[LabelRow],
) -> Settings:
    """A ``fixed`` threshold fitted on this channel's test labels (see evaluation.calibrate),
    on the scores as the variant's engine sees them (calibrated or not)."""
    fixed = {k: v for k, v in variant.threshold.items() if k not in ("kind", "params")}
    probe = ThresholdSettings(**fixed, kind="fixed", params={"value": 1.0})
    run = run_engine(
        variant.settings(base).model_copy(update={"threshold": probe}), model, chan, test, scores
    )
    truth = np.logical_or.reduce([point_labels(row) for row in rows])
    labels = truth[np.asarray(run.end_seqs, dtype=np.int64)]
    seen = np.asarray(run.scores, dtype=np.float64)
    params = dict(variant.threshold.get("params", {}))
    if variant.threshold["kind"] == "fpr_target":
        value = fpr_target_threshold(seen, labels, float(params.get("fpr", 0.01)))
    elif labels.any():
        value, _ = f1_optimal_threshold(seen, labels)
    else:
        value = float(seen.max()) * 1.01  # nothing to find: flag nothing
    value = max(value, float(np.finfo(np.float32).tiny))
    return variant.settings(base).model_copy(
        update={"threshold": probe.model_copy(update={"params": {"value": value}})}
    )


class ScoreCache:
    """One folder per recipe: ``<chan>.pt`` (checkpoint) and ``<chan>.npz`` (raw scores)."""

    def __init__(self, folder: Path, recipe: ModelRecipe) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = self.folder / "recipe.json"
        described = json.dumps(recipe.describe(), sort_keys=True)
        if stamp.exists() and stamp.read_text().strip() != described:
            raise ValueError(
                f"{self.folder} caches scores of another recipe ({stamp.read_text().strip()}); "
                "use another folder"
            )
        # Shards of one run (`evaluate --shard`) share the folder: write the stamp so that
        # another process never reads it half-written.
        if not stamp.exists():
            partial = stamp.with_name(f".recipe.{os.getpid()}.json")
            partial.write_text(described + "\n")
            os.replace(partial, stamp)

    def load(self, chan: str) -> tuple[Checkpoint, dict[str, np.ndarray]] | None:
        """The cached checkpoint and those of its scores that its scorer made (maybe none)."""
        return read_cache_entry(self.folder, chan)

    def save(self, chan: str, checkpoint: Checkpoint, scores: dict[str, np.ndarray]) -> None:
        if not (self.folder / f"{chan}.pt").exists():
            save_checkpoint(checkpoint, self.folder / f"{chan}.pt")
        marked = {**scores, SCORER_KEY: np.array(scorer_of(checkpoint))}
        np.savez(self.folder / f"{chan}.npz", **marked)  # type: ignore[arg-type]


def read_cache_entry(folder: Path, chan: str) -> tuple[Checkpoint, dict[str, np.ndarray]] | None:
    """A score cache's checkpoint of ``chan`` and those of its scores that its scorer made
    (maybe none); None without a checkpoint. Reads without a recipe, for the diagnostics."""
    ckpt, scores = folder / f"{chan}.pt", folder / f"{chan}.npz"
    if not ckpt.exists():
        return None
    # A checkpoint without scores (one written by `combine`) is scored, not retrained.
    arrays: dict[str, np.ndarray] = {}
    if scores.exists():
        with np.load(scores) as data:
            arrays = {name: data[name] for name in data.files}
    checkpoint = load_checkpoint(ckpt, device="cpu")
    # The recipe stamp cannot tell: a scorer's new hyperparameter takes its default in
    # the recipe and in old checkpoints alike (lstm_dt's scored_prediction did).
    if str(arrays.pop(SCORER_KEY, "")) != scorer_of(checkpoint):
        arrays = {}
    return checkpoint, arrays


def scorer_of(checkpoint: Checkpoint) -> str:
    """What a cached score depends on beyond the weights: the detector and how it scores."""
    detector = checkpoint.detector
    return json.dumps(
        {"kind": detector.kind, "hyperparameters": detector.hyperparameters},
        sort_keys=True,
        default=str,
    )


def copy_kind_and_sign(chan: str, copy: int) -> dict[str, Any]:
    """One anomaly per copy: the channel's kinds in turn, and the second round of kinds the
    other way (a channel with one slot would otherwise get the same anomaly twice as often as
    not). `proxy_check.copy_half` reads the direction back from the copy."""
    return {
        "count": 1,
        "kind": KINDS[(zlib.crc32(chan.encode()) + copy) % len(KINDS)],
        "sign": 1.0 if (copy // len(KINDS)) % 2 == 0 else -1.0,
    }


def held_out_injection(
    train: np.ndarray, chan: str, window: int, copy: int = 0, one_per_copy: bool = False
) -> Injected:
    """Synthetic anomalies in the held-out part of train: labels that are not test labels.

    The stretch of train before that part is context, so the threshold is warm when the
    anomalies come. Seeded by the channel name and the copy: every run injects the same
    anomalies, and each copy of one channel other ones (copy 0 is the first injection's).
    With ``one_per_copy``, one anomaly in a random slot, of the channel's kinds in turn
    (eight copies: two of each kind, one up and one down).
    """
    split = held_out_start(len(train))
    lead = min(split, window + INJECTION_WARMUP)
    column = train[:, 0]
    # A column constant in train has no scale to size an anomaly by: it gets none. (Its
    # float32 std is not exactly 0, and anomalies that small would be labels on nothing.)
    spread = float(np.std(column)) if np.ptp(column) > 0 else 0.0
    placement: dict[str, Any] = {
        "seed": zlib.crc32((chan if copy == 0 else f"{chan}/{copy}").encode())
    }
    if one_per_copy:
        placement = {
            "seed": zlib.crc32(f"{chan}/one/{copy}".encode()),
            **copy_kind_and_sign(chan, copy),
        }
    return inject_anomalies(
        train[split - lead :],
        spread=spread,
        lead=lead,
        length=INJECTION_LENGTH,
        margin=INJECTION_MARGIN,
        **placement,
    )


def injected_key(copy: int, one_per_copy: bool = False) -> str:
    """The score cache's key of one copy's injected run (copy 0's predates the copies)."""
    if one_per_copy:
        return f"injected_v4_copy{copy}"
    return INJECTED_KEY if copy == 0 else f"{INJECTED_KEY}_copy{copy}"


def judge_injected(
    settings: Settings,
    model: ScoringModel,
    chan: str,
    injected: Injected,
    scores: np.ndarray | None = None,
) -> ChannelCounts:
    """Episodes of the engine on the injected series, counted against the injected anomalies."""
    found = run_engine(settings, model, chan, injected.values, scores).episodes()
    return count_channel(chan, injected.sequences, found, len(injected.values))


def grid_channel(
    root: Path,
    rows: Sequence[LabelRow],
    recipe: ModelRecipe,
    base: Settings,
    variants: Sequence[ThresholdVariant],
    results: dict[str, VariantResult],
    cache: ScoreCache | None = None,
    injection_copies: int = INJECTION_COPIES,
    one_per_copy: bool = ONE_ANOMALY_PER_COPY,
) -> None:
    chan = rows[0].chan_id
    train = load_series(root, chan, "train")
    test = load_series(root, chan, "test")
    validation = train[held_out_start(len(train)) :]
    injections = {
        injected_key(copy, one_per_copy): held_out_injection(
            train, chan, recipe.window, copy, one_per_copy
        )
        for copy in range(injection_copies)
    }
    cached = cache.load(chan) if cache is not None else None
    scores: dict[str, np.ndarray] = {}
    if cached is not None:
        checkpoint, scores = cached
    else:
        checkpoint = train_channel(root, chan, recipe)
    model = ServedModel(checkpoint)
    series = {"test": test}
    if len(validation) > checkpoint.window:
        series |= {"validation": validation} | {k: i.values for k, i in injections.items()}
    missing = [name for name in series if name not in scores]
    for name in missing:
        scores[name] = raw_scores(base, model, chan, series[name])
    for variant in variants:
        settings = variant.settings(base)
        if variant.threshold.get("kind") in ORACLE_KINDS:
            settings = _oracle_settings(variant, base, model, chan, test, scores["test"], rows)
        predicted = run_engine(settings, model, chan, test, scores["test"]).episodes()
        result = results.setdefault(variant.name, VariantResult())
        result.oracle = variant.threshold.get("kind") in ORACLE_KINDS
        for row in rows:
            result.counts.append(
                count_channel(chan, row.anomaly_sequences, predicted, row.num_values)
            )
            result.rows.append(row)
        if "validation" in series:
            val_eps = run_engine(settings, model, chan, validation, scores["validation"]).episodes()
            result.validation_rows.append(rows[0])
            result.validation_by_channel.append(len(val_eps))
            result.validation_steps_by_channel.append(len(validation))
            for key, injected in injections.items():
                result.injected.append(judge_injected(settings, model, chan, injected, scores[key]))
                result.injected_rows.append(rows[0])
                result.injected_kinds.append(list(injected.kinds))
    if cache is not None and missing:
        cache.save(chan, checkpoint, scores)


def run_grid(
    root: Path,
    dataset: str,
    recipe: ModelRecipe,
    base: Settings,
    variants: Sequence[ThresholdVariant],
    channels: Sequence[str] | None = None,
    progress: bool = True,
    cache: Path | None = None,
    injection_copies: int = INJECTION_COPIES,
    one_per_copy: bool = ONE_ANOMALY_PER_COPY,
) -> dict[str, VariantResult]:
    rows = dataset_rows(root, dataset)
    if channels:
        rows = [r for r in rows if r.chan_id in set(channels)]
    grouped: dict[str, list[LabelRow]] = {}
    for row in rows:
        grouped.setdefault(row.chan_id, []).append(row)
    results: dict[str, VariantResult] = {}
    score_cache = ScoreCache(cache, recipe) if cache is not None else None
    for chan in tqdm(
        grouped,
        desc=f"{recipe.kind} × {len(variants)} thresholds",
        unit="channel",
        disable=None if progress else True,
    ):
        grid_channel(
            root,
            grouped[chan],
            recipe,
            base,
            variants,
            results,
            score_cache,
            injection_copies,
            one_per_copy,
        )
    return results


def _split_by_channel(res: VariantResult) -> dict[str, VariantResult]:
    """One variant's result cut into one result per channel (each channel's entries are
    side by side: `grid_channel` appends a channel's all at once)."""
    parts: dict[str, VariantResult] = {}

    def part(chan: str) -> VariantResult:
        return parts.setdefault(chan, VariantResult(oracle=res.oracle))

    for counts, row in zip(res.counts, res.rows, strict=True):
        part(row.chan_id).counts.append(counts)
        part(row.chan_id).rows.append(row)
    for counts, row, kinds in zip(res.injected, res.injected_rows, res.injected_kinds, strict=True):
        part(row.chan_id).injected.append(counts)
        part(row.chan_id).injected_rows.append(row)
        part(row.chan_id).injected_kinds.append(kinds)
    for row, episodes, steps in zip(
        res.validation_rows, res.validation_by_channel, res.validation_steps_by_channel, strict=True
    ):
        part(row.chan_id).validation_rows.append(row)
        part(row.chan_id).validation_by_channel.append(episodes)
        part(row.chan_id).validation_steps_by_channel.append(steps)
    return parts


# Every field of a VariantResult but its oracle flag is a list with one entry per run.
_LISTED_FIELDS = tuple(f.name for f in fields(VariantResult) if f.name != "oracle")


def merge_results(
    shares: Sequence[dict[str, VariantResult]], channel_order: Sequence[str]
) -> dict[str, VariantResult]:
    """The grid results of several shares of the channels (`evaluate --shard`) as one run
    over all of them would have made them: the channels in `channel_order` (the label
    file's), so that the bootstrap draws what it would draw. Every share must hold the same
    variants, and no channel may be in two shares."""
    if not shares:
        raise ValueError("nothing to merge")
    names = list(shares[0])
    for share in shares[1:]:
        if list(share) != names:
            raise ValueError("the shares were run with different grids")
    merged: dict[str, VariantResult] = {}
    for name in names:
        by_channel: dict[str, VariantResult] = {}
        for share in shares:
            for chan, part in _split_by_channel(share[name]).items():
                if chan in by_channel:
                    raise ValueError(f"{chan} is in two shares")
                by_channel[chan] = part
        unknown = set(by_channel) - set(channel_order)
        if unknown:
            raise ValueError(f"channels outside the given order: {sorted(unknown)}")
        out = VariantResult(oracle=shares[0][name].oracle)
        for chan in (c for c in channel_order if c in by_channel):
            for listed in _LISTED_FIELDS:
                getattr(out, listed).extend(getattr(by_channel[chan], listed))
        merged[name] = out
    return merged


def join_variants(groups: Sequence[dict[str, VariantResult]]) -> dict[str, VariantResult]:
    """Grid results of different variants over the same channels as one result: a variant
    is judged on a channel independently of the others (the same scores, the same seeded
    injections), so a variant added to a grid needs no re-run of the rest."""
    if not groups:
        raise ValueError("nothing to join")

    def channels(group: dict[str, VariantResult]) -> list[str]:
        first = next(iter(group.values()))
        return [r.chan_id for r in first.rows] + [r.chan_id for r in first.injected_rows]

    joined: dict[str, VariantResult] = {}
    for group in groups:
        if channels(group) != channels(groups[0]):
            raise ValueError("the variants to join were not run on the same channels")
        for name, result in group.items():
            if name in joined:
                raise ValueError(f"variant {name!r} is in two shares of different grids")
            joined[name] = result
    return joined


RESULTS_FILE = "grid-results.pkl"


def save_results(results: dict[str, VariantResult], path: Path) -> Path:
    """The grid's results as they are, for `merge_results` (a pickle: read only your own)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        pickle.dump(results, handle)
    return path


def load_results(path: Path) -> dict[str, VariantResult]:
    """What `save_results` wrote: at `path`, or in the folder `path` (its RESULTS_FILE)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    with path.open("rb") as handle:
        results = pickle.load(handle)  # unpickling runs code: only files save_results wrote
    if not isinstance(results, dict) or not all(
        isinstance(r, VariantResult) for r in results.values()
    ):
        raise ValueError(f"{path} does not hold grid results")
    return results


def _alerts_per_1000_normal(counts: Sequence[ChannelCounts]) -> float:
    normal = sum(c.n_points - c.labelled_points for c in counts)
    return 1000.0 * sum(c.fp for c in counts) / normal if normal else 0.0


def _of_craft(
    counts: Sequence[ChannelCounts], rows: Sequence[LabelRow], craft: str
) -> list[ChannelCounts]:
    """The counts whose label row (same position) belongs to one spacecraft."""
    return [c for c, r in zip(counts, rows, strict=True) if r.spacecraft == craft]


def grid_table(results: dict[str, VariantResult], root: Path, kind: str) -> str:
    lines = [
        "| model | threshold | data | P | R | F1 | F0.5 | flagged | composite F1 | delay | "
        "false alerts / 1k normal steps | validation episodes / 1k steps | "
        "injected: P | injected: R | injected: F1 | injected: composite F1 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    crafts = sorted({r.spacecraft for res in results.values() for r in res.rows})
    free = label_free_scores(results)
    for craft in crafts:
        for name, res in results.items():
            counts = _of_craft(res.counts, res.rows, craft)
            m: EventMetrics = summarise(counts)
            score = free[name].get(craft)
            val = score.validation_per_1k if score is not None else math.nan
            label = f"{name} (oracle: test labels)" if res.oracle else name
            inj = summarise(_of_craft(res.injected, res.injected_rows, craft))
            lines.append(
                f"| {kind} | {label} | {craft} | {m.precision:.3f} | {m.recall:.3f} | {m.f1:.3f} | "
                f"{m.f05:.3f} | {m.flagged_fraction:.1%} | **{m.composite_f1:.3f}** | "
                f"{'' if m.mean_delay is None else f'{m.mean_delay:.0f}'} | "
                f"{_alerts_per_1000_normal(counts):.2f} | {val:.2f} | "
                f"{inj.precision:.3f} | {inj.recall:.3f} | {inj.f1:.3f} | "
                f"{inj.composite_f1:.3f} |"
            )
        chans = {r.chan_id for res in results.values() for r in res.rows if r.spacecraft == craft}
        ref = [c for c in telemanom_reference(root, craft) if c.channel in chans]
        m = summarise(ref)
        lines.append(
            f"| telemanom | published run | {craft} | {m.precision:.3f} | {m.recall:.3f} | "
            f"{m.f1:.3f} | {m.f05:.3f} | {m.flagged_fraction:.1%} | **{m.composite_f1:.3f}** | "
            f"{'' if m.mean_delay is None else f'{m.mean_delay:.0f}'} | "
            f"{_alerts_per_1000_normal(ref):.2f} | | | | | |"
        )
    return "\n".join(lines)


# The label-free rule of the threshold race (docs/threshold-race.md): at most this many episodes
# per 1,000 steps of clean held-out train data, on every data set.
MAX_VALIDATION_EPISODES_PER_1K = 0.05


@dataclass(frozen=True)
class LabelFreeScore:
    """What the rule sees of one variant on one data set: no test label enters it."""

    validation_per_1k: float
    injected_f1: float
    injected_composite_f1: float


def injected_crafts(results: dict[str, VariantResult]) -> list[str]:
    """The spacecraft with at least one injected run in any variant, sorted."""
    return sorted({r.spacecraft for res in results.values() for r in res.injected_rows})


def label_free_scores(results: dict[str, VariantResult]) -> dict[str, dict[str, LabelFreeScore]]:
    """variant → spacecraft → its validation alarm rate and injected-anomaly F1s."""
    out: dict[str, dict[str, LabelFreeScore]] = {}
    for name, res in results.items():
        by_craft: dict[str, LabelFreeScore] = {}
        for craft in sorted({r.spacecraft for r in res.injected_rows}):
            rows = [i for i, r in enumerate(res.injected_rows) if r.spacecraft == craft]
            clean = [i for i, r in enumerate(res.validation_rows) if r.spacecraft == craft]
            episodes = sum(res.validation_by_channel[i] for i in clean)
            steps = sum(res.validation_steps_by_channel[i] for i in clean)
            injected = summarise([res.injected[i] for i in rows])
            by_craft[craft] = LabelFreeScore(
                1000.0 * episodes / max(steps, 1), injected.f1, injected.composite_f1
            )
        out[name] = by_craft
    return out


# Two means of the same counts can differ in the last bits by summation order alone.
_TIE = 1e-9


def _held_out_quiet(by_craft: dict[str, LabelFreeScore]) -> bool:
    """v4's quiet filter: few enough false episodes on the held-out part, on every data set."""
    return all(s.validation_per_1k <= MAX_VALIDATION_EPISODES_PER_1K for s in by_craft.values())


def label_free_choice(
    results: dict[str, VariantResult],
    *,
    tie_break_composite: bool = False,
    quiet: Callable[[str], bool] | None = None,
) -> str | None:
    """The threshold race's rule, which reads no test label: among non-oracle variants that
    raise at most `MAX_VALIDATION_EPISODES_PER_1K` episodes per 1,000 clean held-out steps on
    every data set, the highest event F1 on the injected anomalies, averaged over the data
    sets (ties: the first in grid order). None if no variant qualifies.

    This is the rule docs/threshold-race.md wrote down for the first race. The injected composite
    F1 is reported beside it but does not choose: on the first injection (40-step anomalies)
    it rewarded tight episodes far more than SMAP/MSL's labels do, and when the injection
    changed (`INJECTION_LENGTH`) the rule was kept as it was, as written down beforehand.

    With ``tie_break_composite`` (the eighth look's rule, written down before its new
    variants had numbers): among the variants tied on that mean injected F1, the highest
    mean injected composite F1, then grid order. An option that only shortens episodes
    finds the same injected anomalies, so without it such an option ties and loses on
    grid order whatever it does to the episodes' length.

    With ``quiet`` (rule v5, the thirtieth look), that test of a variant's name replaces the
    held-out filter: the quiet half then comes from another stream (`crossfit_replay`'s
    `no_noisier_than`)."""
    best: tuple[float, float, str] | None = None
    tie = _TIE if tie_break_composite else 0.0
    for name, by_craft in label_free_scores(results).items():
        if results[name].oracle or not by_craft:
            continue
        if not (quiet(name) if quiet is not None else _held_out_quiet(by_craft)):
            continue
        f1 = float(np.mean([s.injected_f1 for s in by_craft.values()]))
        composite = float(np.mean([s.injected_composite_f1 for s in by_craft.values()]))
        if best is None or f1 > best[0] + tie:
            best = (f1, composite, name)
        elif tie_break_composite and abs(f1 - best[0]) <= tie and composite > best[1]:
            best = (best[0], composite, name)
    return None if best is None else best[2]


def choice_margin(
    results: dict[str, VariantResult],
    first: str,
    second: str,
    resamples: int = 1000,
    seed: int = 0,
    *,
    tie_break_composite: bool = False,
    craft: str | None = None,
) -> float:
    """How often `first` stays ahead of `second` on the rule's number, the mean injected F1,
    when each data set's channels are drawn again with replacement (a paired bootstrap; a
    channel is drawn with all its copies of the injection; ties count half). With
    ``tie_break_composite``, on `label_free_choice`'s key of that name: a draw tied on the
    mean injected F1 goes to the higher mean injected composite F1. With ``craft``, that
    data set's channels alone. Label-free, and it chooses nothing by itself: it says whether
    a pick rests on more than a few injected anomalies. Near 0.5 the two are not told apart."""
    a, b = results[first], results[second]
    if [r.chan_id for r in a.injected_rows] != [r.chan_id for r in b.injected_rows]:
        raise ValueError(f"{first!r} and {second!r} were not run on the same channels")
    rng = np.random.default_rng(seed)
    f1_difference = np.zeros(resamples)
    composite_difference = np.zeros(resamples)
    crafts = sorted({r.spacecraft for r in a.injected_rows})
    if craft is not None:
        if craft not in crafts:
            raise ValueError(f"no injected run of {craft!r} (there are: {', '.join(crafts)})")
        crafts = [craft]
    for drawn_craft in crafts:
        # In the order of the runs, so that one copy per channel draws as it always did.
        channels = list(
            dict.fromkeys(r.chan_id for r in a.injected_rows if r.spacecraft == drawn_craft)
        )
        drawn = rng.integers(0, len(channels), size=(resamples, len(channels)))
        for res, sign in ((a, 1.0), (b, -1.0)):
            f1, composite = _drawn_f1s(res, channels, drawn)
            f1_difference += sign * f1 / len(crafts)
            composite_difference += sign * composite / len(crafts)
    tied = np.abs(f1_difference) < _TIE
    ahead = np.where(tied, 0.5, (f1_difference > 0).astype(np.float64))
    if tie_break_composite:
        by_composite = np.where(
            np.abs(composite_difference) < _TIE, 0.5, (composite_difference > 0).astype(float)
        )
        ahead = np.where(tied, by_composite, ahead)
    return float(ahead.mean())


# The tenth look's rule (docs/threshold-race.md, written down before SMAP's numbers under v4): a
# pick moves the default only if it stays ahead of the incumbent in this share of draws,
# over both data sets together and over each alone.
DECISION_MARGIN = 0.9


@dataclass(frozen=True)
class RaceDecision:
    """What the written rule makes of one grid: the tie-break rule's pick against the
    incumbent (the default configuration), and whether the pick replaces it."""

    incumbent: str
    pick: str | None
    # How often the pick stays ahead of the incumbent: "all" data sets together, then each.
    margins: dict[str, float]
    min_margin: float = DECISION_MARGIN

    @property
    def replaces(self) -> bool:
        return (
            self.pick is not None
            and self.pick != self.incumbent
            and all(m >= self.min_margin for m in self.margins.values())
        )

    @property
    def default(self) -> str:
        return self.pick if self.replaces and self.pick is not None else self.incumbent

    def explain(self) -> str:
        if self.pick is None:
            return f"no variant qualifies: the default stays `{self.incumbent}`"
        if self.pick == self.incumbent:
            return f"the pick is the default, `{self.incumbent}`: it stays"
        ahead = ", ".join(f"{k} {v:.0%}" for k, v in self.margins.items())
        verdict = (
            f"it replaces the default `{self.incumbent}`"
            if self.replaces
            else f"the default `{self.incumbent}` stays"
        )
        return (
            f"the pick `{self.pick}` stays ahead of the default in {ahead} of 1,000 draws "
            f"(the bar: {self.min_margin:.0%} on each): {verdict}"
        )


def race_decision(
    results: dict[str, VariantResult],
    incumbent: str,
    min_margin: float = DECISION_MARGIN,
    quiet: Callable[[str], bool] | None = None,
) -> RaceDecision:
    """The tenth look's written rule. The pick is `label_free_choice` with the tie-break; it
    replaces `incumbent` only if it stays ahead of it, on that rule's key, in at least
    `min_margin` of the paired draws of both data sets' channels together and of each data
    set's alone (the issue's bar is per data set). Reads no test label. With ``quiet``, rule
    v5: that filter in place of the held-out one (`label_free_choice`)."""
    if incumbent not in results:
        raise ValueError(f"the incumbent {incumbent!r} is not in the grid")
    pick = label_free_choice(results, tie_break_composite=True, quiet=quiet)
    margins: dict[str, float] = {}
    if pick is not None and pick != incumbent:
        margins = _rule_margins(results, pick, incumbent)
    return RaceDecision(incumbent, pick, margins, min_margin)


def _rule_margins(results: dict[str, VariantResult], first: str, second: str) -> dict[str, float]:
    """`choice_margin` on the tie-break rule's key: over all data sets' channels ("all"),
    then over each data set's of `first` alone."""
    margins = {"all": choice_margin(results, first, second, tie_break_composite=True)}
    for craft in injected_crafts({first: results[first]}):
        margins[craft] = choice_margin(
            results, first, second, tie_break_composite=True, craft=craft
        )
    return margins


def detector_margins(first: VariantResult, second: VariantResult) -> dict[str, float]:
    """The written rule's bootstrap between two detectors under one threshold: how often
    `first`'s run stays ahead of `second`'s on the tie-break rule's key, over both data sets'
    channels together ("all") and each alone. Both must hold the same channels' injected
    runs (the same grid over the same channels, each detector's own cache). Label-free."""
    return _rule_margins({"first": first, "second": second}, "first", "second")


def compare_detectors(
    first: VariantResult, second: VariantResult, names: tuple[str, str], root: Path
) -> str:
    """Markdown: the two detectors' rows under one threshold (test and injected numbers,
    side by side), then `detector_margins`."""
    table = grid_table({names[0]: first, names[1]: second}, root, "detector")
    # One decimal: a margin next to the 90 % bar must show which side of it it is on.
    ahead = ", ".join(f"{k} {v:.1%}" for k, v in detector_margins(first, second).items())
    return (
        f"{table}\n\n`{names[0]}` stays ahead of `{names[1]}` on the written rule's key "
        f"(injected F1, then injected composite F1) in {ahead} of 1,000 paired draws of the "
        f"channels (the tenth look's bar for a change of default: {DECISION_MARGIN:.0%} on "
        "each). The test columns read labels and choose nothing.\n"
    )


def incumbent_variant(variants: Sequence[ThresholdVariant], base: Settings) -> str | None:
    """The grid's variant that is `base`'s threshold and episode rules (the name of the
    default configuration in the grid), compared as the engine builds them; None if none."""

    def built(settings: Settings) -> tuple[Any, ...]:
        t = settings.threshold
        strategy = build_threshold(t.kind, **t.strategy_params())
        return (t.kind, t.calibration, strategy.describe(), settings.alerts)

    want = built(base)
    for variant in variants:
        # An oracle is fitted on test labels: never a configuration the daemon runs (and
        # not a registered strategy).
        if variant.threshold.get("kind") in ORACLE_KINDS:
            continue
        if built(variant.settings(base)) == want:
            return variant.name
    return None


def _drawn_f1s(
    res: VariantResult, channels: Sequence[str], drawn: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Event F1 and composite F1 of the injected runs, summed per draw of channels."""
    index = {chan: i for i, chan in enumerate(channels)}
    # Per channel, over its copies: tp, fp, fn, flagged points, true flagged points.
    per_channel = np.zeros((len(channels), 5))
    for counts, row in zip(res.injected, res.injected_rows, strict=True):
        if row.chan_id in index:
            per_channel[index[row.chan_id]] += (
                counts.tp,
                counts.fp,
                counts.fn,
                counts.flagged_points,
                counts.true_flagged_points,
            )
    tp, fp, fn, flagged, true_flagged = per_channel[drawn].sum(axis=1).T
    zeros = np.zeros(len(drawn))
    # Event F1 of summed counts: 2PR / (P + R) = 2tp / (2tp + fp + fn).
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=zeros.copy(), where=2 * tp + fp + fn > 0)
    recall = np.divide(tp, tp + fn, out=zeros.copy(), where=tp + fn > 0)
    precision = np.divide(true_flagged, flagged, out=zeros.copy(), where=flagged > 0)
    composite = np.divide(
        2 * precision * recall,
        precision + recall,
        out=zeros.copy(),
        where=precision + recall > 0,
    )
    return f1, composite


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ: Pearson's correlation of the ranks, tied values sharing their mean rank.
    NaN for fewer than two pairs or when either side is constant."""
    if len(x) != len(y):
        raise ValueError(f"need pairs, got {len(x)} and {len(y)} values")
    if len(x) < 2:
        return math.nan
    rx, ry = _mean_ranks(x), _mean_ranks(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _mean_ranks(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    ranks = np.empty(len(array))
    ranks[np.argsort(array, kind="stable")] = np.arange(len(array), dtype=np.float64)
    for value in np.unique(array):
        tied = array == value
        ranks[tied] = ranks[tied].mean()
    return ranks


@dataclass(frozen=True)
class ProxyAgreement:
    """How well the label-free column ranks the variants as the test labels do."""

    n_variants: int
    with_f1: float  # Spearman ρ of injected F1 against test event F1
    with_composite_f1: float  # … against test composite F1


def proxy_agreement(results: dict[str, VariantResult]) -> dict[str, ProxyAgreement]:
    """spacecraft → agreement of injected F1 with the test F1s over the non-oracle variants.

    Reads test labels, so it chooses nothing: it says whether the label-free choice can be
    trusted on this data. Near zero or below, the injected anomalies do not tell the
    variants apart the way the labelled ones do."""
    free = label_free_scores(results)
    crafts = injected_crafts(results)
    out: dict[str, ProxyAgreement] = {}
    for craft in crafts:
        injected, f1, composite = [], [], []
        for name, res in results.items():
            if res.oracle or craft not in free[name]:
                continue
            test = summarise(_of_craft(res.counts, res.rows, craft))
            injected.append(free[name][craft].injected_f1)
            f1.append(test.f1)
            composite.append(test.composite_f1)
        out[craft] = ProxyAgreement(
            len(injected),
            rank_correlation(injected, f1),
            rank_correlation(injected, composite),
        )
    return out


def injected_found_by_kind(res: VariantResult, craft: str) -> dict[str, tuple[int, int]]:
    """kind → (found, injected) over one spacecraft's injected runs, by the event rule.

    Label-free, like the injected F1: which kinds of anomaly a variant misses."""
    out: dict[str, tuple[int, int]] = {}
    for counts, row, kinds in zip(res.injected, res.injected_rows, res.injected_kinds, strict=True):
        if row.spacecraft != craft:
            continue
        for span, kind in zip(counts.labelled, kinds, strict=True):
            hit = count_channel(counts.channel, [span], counts.predicted, counts.n_points).tp
            found, total = out.get(kind, (0, 0))
            out[kind] = (found + hit, total + 1)
    return out


def injected_kinds_table(results: dict[str, VariantResult]) -> str:
    """The grid report's markdown table of `injected_found_by_kind`, variant by spacecraft."""
    crafts = injected_crafts(results)
    kinds = sorted({k for res in results.values() for ks in res.injected_kinds for k in ks})
    lines = [
        "| threshold | data | " + " | ".join(kinds) + " |",
        "|---|---|" + "---:|" * len(kinds),
    ]
    for craft in crafts:
        for name, res in results.items():
            found = injected_found_by_kind(res, craft)
            cells = [f"{found[k][0]} / {found[k][1]}" if k in found else "" for k in kinds]
            lines.append(f"| {name} | {craft} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_grid(
    results: dict[str, VariantResult],
    root: Path,
    kind: str,
    out_dir: Path,
    variants: Sequence[ThresholdVariant],
    incumbent: str | None = None,
) -> Path:
    """The grid's report, thresholds.md in `out_dir`. With `incumbent` (the grid's name of
    the default configuration, `incumbent_variant`), also what `race_decision` makes of it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = grid_table(results, root, kind)
    decision = ""
    if incumbent is not None and incumbent in results:
        decision = (
            "The written rule (docs/threshold-race.md, tenth look): "
            f"{race_decision(results, incumbent).explain()}.\n\n"
        )
    picks = []
    for tie_break in (False, True):
        choice = label_free_choice(results, tie_break_composite=tie_break)
        margin = ""
        if choice is not None:
            others = {k: v for k, v in results.items() if k != choice}
            runner_up = label_free_choice(others, tie_break_composite=tie_break)
            if runner_up is not None:
                ahead = choice_margin(results, choice, runner_up, tie_break_composite=tie_break)
                margin = (
                    f"; the runner-up is `{runner_up}`, and the choice stays ahead of it in "
                    f"{ahead:.0%} of 1,000 draws of each data set's channels with replacement "
                    "(near 50 % would mean not told apart)"
                )
        picks.append(f"`{choice}`{margin}")
    channels = sum(len(res.validation_rows) for res in results.values())
    runs = sum(len(res.injected) for res in results.values())
    copies = f"{runs / channels:g}" if channels else "no"
    agreement = "\n".join(
        f"- {craft}: ρ = {a.with_f1:.2f} with event F1, {a.with_composite_f1:.2f} with "
        f"composite F1 ({a.n_variants} variants)"
        for craft, a in proxy_agreement(results).items()
    )
    doc = out_dir / "thresholds.md"
    doc.write_text(
        f"# Thresholds × {kind}\n\n{table}\n\n"
        f"Injected runs per channel (copies of the injection, pooled): {copies}.\n\n"
        f"Label-free choice (at most {MAX_VALIDATION_EPISODES_PER_1K} validation episodes per "
        f"1k steps on every data set, then the best mean injected F1): {picks[0]}\n\n"
        "The same with ties on the mean injected F1 broken by the mean injected composite F1: "
        f"{picks[1]}\n\n"
        f"{decision}"
        "How the injected F1 ranks the variants against how the test labels rank them "
        "(Spearman's ρ; it reads test labels and chooses nothing):\n\n"
        f"{agreement or '- (no injected runs)'}\n\n"
        "Injected anomalies found, by kind (label-free; found / injected):\n\n"
        f"{injected_kinds_table(results)}\n\nVariants:\n\n"
        + "\n".join(
            f"- `{v.name}`: threshold `{json.dumps(v.threshold)}`, alerts `{json.dumps(v.alerts)}`"
            for v in variants
        )
        + f"\n\nWritten {time.strftime('%Y-%m-%d %H:%M:%S')}.\n"
    )
    return doc
