"""A label-free check of the threshold race's proxy (docs/threshold-race.md, 26th and 28th looks).

The written rule judges thresholds by a proxy that reads no test label: few false episodes
in the clean held-out part of train, then a high event F1 on anomalies injected there. A
proxy can fail in three ways that show without reading a label:

- **its ranking is noise**: the variants' injected F1s move with which anomalies happened
  to be injected. Each channel is injected `INJECTION_COPIES` times, and the copies fall in
  two matched halves (each kind once going up, then once going down), so the ranking of one
  half against the other's is a split-half reliability, stepped up by Spearman–Brown;
- **its quiet half does not transfer**: the held-out part raises false episodes at rates
  that do not rank the variants as the test streams' alarm rates do. The test streams'
  episodes are counted without their labels, so this reads the test split but no label;
- **it pays for volume**: its key, the injected event F1, ranks the variants as the share
  of test points they flag does (twenty-eighth look), the one number of the issue's bar
  that labels do not decide.

Like `proxy_agreement`, it chooses nothing: it says whether the proxy can be trusted to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from stream_detector.evaluation.injection import KINDS
from stream_detector.evaluation.metrics import ChannelCounts
from stream_detector.evaluation.threshold_grid import (
    LabelFreeScore,
    VariantResult,
    injected_crafts,
    label_free_choice,
    label_free_scores,
    rank_correlation,
)

# The bars the twenty-sixth and twenty-eighth looks wrote down before their numbers.
MIN_RELIABILITY = 0.8
MIN_TRANSFER = 0.7
MAX_VOLUME = 0.5


def copy_numbers(res: VariantResult) -> list[int]:
    """Each injected run's copy of the injection: a channel's copies lie side by side, in
    copy order (`grid_channel`), so a run's copy is its place among its channel's runs."""
    seen: dict[str, int] = {}
    out = []
    for row in res.injected_rows:
        out.append(seen.get(row.chan_id, 0))
        seen[row.chan_id] = out[-1] + 1
    return out


def copy_half(copy: int) -> int:
    """0 for the copies whose anomalies go up, 1 for those going down (`held_out_injection`
    with one anomaly per copy: the kinds in turn, the second round the other way)."""
    return (copy // len(KINDS)) % 2


def runs_at(res: VariantResult, keep: Sequence[int]) -> VariantResult:
    """`res` with only the injected runs at `keep` (everything else as it is)."""
    return replace(
        res,
        injected=[res.injected[i] for i in keep],
        injected_rows=[res.injected_rows[i] for i in keep],
        injected_kinds=[res.injected_kinds[i] for i in keep],
    )


def half_of(res: VariantResult, half: int) -> VariantResult:
    """`res` with only one half's injected runs (everything else as it is)."""
    return runs_at(res, [i for i, c in enumerate(copy_numbers(res)) if copy_half(c) == half])


def _injected_f1(scores: dict[str, dict[str, LabelFreeScore]], name: str, craft: str) -> float:
    """The rule's key, `label_free_scores`' injected event F1 (0 where that spacecraft has no
    injected run in these copies)."""
    score = scores[name].get(craft)
    return score.injected_f1 if score is not None else 0.0


def held_out_false_rate(res: VariantResult, craft: str) -> float:
    """False episodes per 1,000 held-out steps: the clean runs' episodes and the injected
    runs' episodes that overlap no injected anomaly, over all of those runs' steps."""
    clean = [i for i, r in enumerate(res.validation_rows) if r.spacecraft == craft]
    episodes = sum(res.validation_by_channel[i] for i in clean)
    steps = sum(res.validation_steps_by_channel[i] for i in clean)
    for counts, row in zip(res.injected, res.injected_rows, strict=True):
        if row.spacecraft == craft:
            episodes += counts.fp
            steps += counts.n_points
    return 1000.0 * episodes / max(steps, 1)


def _test_runs(res: VariantResult, craft: str) -> list[ChannelCounts]:
    """One spacecraft's test runs, one per channel (a channel with two label rows was run
    once and is counted once)."""
    runs: dict[str, ChannelCounts] = {}
    for counts, row in zip(res.counts, res.rows, strict=True):
        if row.spacecraft == craft:
            runs.setdefault(row.chan_id, counts)
    return list(runs.values())


def unlabelled_alarm_rate(res: VariantResult, craft: str) -> float:
    """Episodes per 1,000 test steps that the variant raises on one spacecraft's test
    streams, every one of them: no label is read."""
    runs = _test_runs(res, craft)
    steps = sum(r.n_points for r in runs)
    return 1000.0 * sum(len(r.predicted) for r in runs) / max(steps, 1)


def flagged_share(res: VariantResult, craft: str) -> float:
    """The share of one spacecraft's test points the variant flags; no label is read. The
    issue's bar caps it."""
    runs = _test_runs(res, craft)
    return sum(r.flagged_points for r in runs) / max(sum(r.n_points for r in runs), 1)


def spearman_brown(rho: float) -> float:
    """The reliability of a measure twice as long as the halves that correlate at `rho`."""
    if math.isnan(rho) or rho <= -1.0:
        return math.nan
    return 2 * rho / (1 + rho)


@dataclass(frozen=True)
class ProxyCheck:
    """The three tests on one spacecraft's variants."""

    craft: str
    variants: tuple[str, ...]
    up_f1: tuple[float, ...]  # injected F1 on the copies going up, per variant
    down_f1: tuple[float, ...]  # … going down
    held_out_rate: tuple[float, ...]  # false episodes per 1k held-out steps
    test_rate: tuple[float, ...]  # episodes per 1k test steps, no label read
    all_f1: tuple[float, ...]  # injected F1 over all copies: the rule's key
    test_flagged: tuple[float, ...]  # share of test points flagged, no label read

    @property
    def half_rho(self) -> float:
        return rank_correlation(self.up_f1, self.down_f1)

    @property
    def reliability(self) -> float:
        return spearman_brown(self.half_rho)

    @property
    def transfer(self) -> float:
        return rank_correlation(self.held_out_rate, self.test_rate)

    @property
    def volume(self) -> float:
        return rank_correlation(self.all_f1, self.test_flagged)

    @property
    def reliable(self) -> bool:
        # A NaN (a constant side: no resolution at all) fails, as it should.
        return self.reliability >= MIN_RELIABILITY

    @property
    def transfers(self) -> bool:
        return self.transfer >= MIN_TRANSFER

    @property
    def ignores_volume(self) -> bool:
        # A NaN (every variant flags the same share, or ties on the key) says nothing against.
        return not self.volume > MAX_VOLUME

    @property
    def passed(self) -> bool:
        return self.reliable and self.transfers and self.ignores_volume


def check_proxy(results: dict[str, VariantResult]) -> dict[str, ProxyCheck]:
    """spacecraft → the three tests over the grid's non-oracle variants."""
    free = {name: res for name, res in results.items() if not res.oracle}
    scores = label_free_scores(free)
    up, down = (label_free_scores({n: half_of(r, h) for n, r in free.items()}) for h in (0, 1))
    out: dict[str, ProxyCheck] = {}
    for craft in injected_crafts(free):
        names = tuple(
            n for n, r in free.items() if any(x.spacecraft == craft for x in r.injected_rows)
        )
        out[craft] = ProxyCheck(
            craft,
            names,
            tuple(_injected_f1(up, n, craft) for n in names),
            tuple(_injected_f1(down, n, craft) for n in names),
            tuple(held_out_false_rate(free[n], craft) for n in names),
            tuple(unlabelled_alarm_rate(free[n], craft) for n in names),
            tuple(_injected_f1(scores, n, craft) for n in names),
            tuple(flagged_share(free[n], craft) for n in names),
        )
    return out


def half_picks(results: dict[str, VariantResult]) -> tuple[str | None, str | None, str | None]:
    """The written rule's pick (with its tie-break) on the up copies, the down copies, and
    all of them."""
    picks = [
        label_free_choice({n: half_of(r, h) for n, r in results.items()}, tie_break_composite=True)
        for h in (0, 1)
    ]
    return picks[0], picks[1], label_free_choice(results, tie_break_composite=True)


def _verdict(value: float, ok: bool) -> str:
    return f"{value:.2f} ({'passes' if ok else 'fails'})"


def proxy_check_report(
    results: dict[str, VariantResult],
    checks: dict[str, ProxyCheck],
    incumbent: str | None = None,
) -> str:
    """Markdown of `check_proxy`'s `checks` on `results`: per spacecraft, the three tests
    against their bars; the halves' picks; with `incumbent`, its held-out and test alarm
    rates and their ratio (the level of the shift)."""
    lines = [
        f"| data | variants | ρ of the halves | reliability (bar ≥ {MIN_RELIABILITY}) "
        f"| transfer ρ (bar ≥ {MIN_TRANSFER}) | volume ρ (bar ≤ {MAX_VOLUME}) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for craft, c in checks.items():
        lines.append(
            f"| {craft} | {len(c.variants)} | {c.half_rho:.2f} | "
            f"{_verdict(c.reliability, c.reliable)} | {_verdict(c.transfer, c.transfers)} | "
            f"{_verdict(c.volume, c.ignores_volume)} |"
        )
    up, down, both = half_picks(results)
    lines += [
        "",
        f"The rule's pick on the copies going up: `{up}`; going down: `{down}`; all: `{both}`.",
    ]
    if incumbent is not None:
        for craft, c in checks.items():
            if incumbent not in c.variants:
                continue
            i = c.variants.index(incumbent)
            held, test = c.held_out_rate[i], c.test_rate[i]
            ratio = f"{test / held:.1f}×" if held > 0 else "no held-out false episode"
            lines.append(
                f"- `{incumbent}` on {craft}: {held:.3f} false episodes per 1k held-out steps, "
                f"{test:.3f} episodes per 1k test steps ({ratio})."
            )
    for craft, c in checks.items():
        lines += [
            "",
            f"{craft}, per variant:",
            "",
            "| threshold | injected F1 | up | down | held-out false / 1k | test episodes / 1k "
            "| test flagged |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for j, name in enumerate(c.variants):
            lines.append(
                f"| {name} | {c.all_f1[j]:.3f} | {c.up_f1[j]:.3f} | {c.down_f1[j]:.3f} | "
                f"{c.held_out_rate[j]:.3f} | {c.test_rate[j]:.3f} | {c.test_flagged[j]:.1%} |"
            )
    return "\n".join(lines) + "\n"


def all_passed(checks: dict[str, ProxyCheck]) -> bool:
    return bool(checks) and all(c.passed for c in checks.values())
