"""The thirty-fourth look's late key, recorded in docs/late-key: it must stay what
docs/threshold-race.md quotes of it, the key per variant and rule v6's verdict."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream_detector.evaluation.crossfit_injection import load_late
from stream_detector.evaluation.replay_counts import decision_lines, load_counts
from stream_detector.evaluation.threshold_grid import (
    incumbent_variant,
    label_free_scores,
    load_grid,
)
from stream_detector.settings import Settings
from tests.unit.test_recorded_counts import _table

REPO = Path(__file__).resolve().parents[2]
GRID = load_grid(REPO / "docs" / "threshold-race-batches.json")
RECORD = REPO / "docs" / "late-key" / "telemanom-recipe-batches.json.gz"
HEADER = "| threshold | late key, MSL | held-out key, MSL | late key, SMAP |"
# The thirty-fifth look's key, warmed on the other half, beside the thirty-fourth's.
WARM = REPO / "docs" / "late-key" / "telemanom-recipe-batches-warm.json.gz"
WARM_HEADER = "| threshold | warm key, MSL | late key, MSL | warm key, SMAP |"
# The thirty-sixth look's: the 24 variants' warm runs and the spike rule's, joined.
SPIKES = REPO / "docs" / "late-key" / "telemanom-recipe-batches-spikes-warm.json.gz"
SPIKES_HEADER = "| | warm key MSL | warm key SMAP | cross-fitted episodes MSL / SMAP |"
# The thirty-seventh look's: the thirty-fifth's runs judged from step 360 of each half.
SETTLED = REPO / "docs" / "late-key" / "telemanom-recipe-batches-warm-settled.json.gz"


def _doc() -> str:
    return (REPO / "docs" / "threshold-race.md").read_text()


def _counts(folder: str, grid=GRID):
    """The cross-fitted counts recorded in docs/replay-counts/`folder`, of `grid`'s variants."""
    files = sorted((REPO / "docs" / "replay-counts" / folder).glob("*.json"))
    return load_counts(files, grid)[0]


def _quoted_verdict(counts, late, grid=GRID) -> tuple[str, str]:
    """The rule's verdict as the document quotes it (after its label-free preamble), and the
    default variant of `grid` it is measured against."""
    incumbent = incumbent_variant(grid, Settings())
    assert incumbent is not None
    verdict = decision_lines(counts, late, incumbent)
    return verdict.split("no test label read): ", 1)[1], incumbent


def _name(cell: str) -> str:
    return re.sub(r" \((the default|v7's pick)\)$", "", cell)


def test_the_warm_key_is_the_documents_table_beside_the_late_one():
    warm, late = label_free_scores(load_late(WARM)), label_free_scores(load_late(RECORD))
    rows = _table(WARM_HEADER)
    assert [_name(r[0]) for r in rows] == [v.name for v in GRID]
    for row in rows:
        name = _name(row[0])
        cells = [warm[name]["MSL"], late[name]["MSL"], warm[name]["SMAP"], late[name]["SMAP"]]
        assert [f"{c.injected_f1:.3f}" for c in cells] == row[1:5], name


def test_the_recorded_late_key_is_the_documents_table():
    late = load_late(RECORD)
    assert list(late) == [v.name for v in GRID]
    runs = [r.spacecraft for r in late[GRID[0].name].injected_rows]
    # 33 MSL and 77 SMAP halves of 17 and 39 channels, eight copies each, a channel's folds
    # summed copy by copy.
    assert (runs.count("MSL"), runs.count("SMAP")) == (8 * 17, 8 * 39)
    scores = label_free_scores(late)
    rows = _table(HEADER)
    assert [re.sub(r" \(the default\)$", "", r[0]) for r in rows] == list(late)
    for row in rows:
        name = re.sub(r" \(the default\)$", "", row[0])
        assert f"{scores[name]['MSL'].injected_f1:.3f}" == row[1], name
        assert f"{scores[name]['SMAP'].injected_f1:.3f}" == row[3], name


@pytest.mark.parametrize(
    ("record", "pick", "margins"),
    [
        (
            RECORD,
            "telemanom, buffer 100, relearn 100, spikes ×2, warm-up 500",
            "79%, MSL 71%, SMAP 84%",
        ),
        (WARM, "telemanom, buffer 25, relearn 50, spikes ×2, warm-up 500", "57%, MSL 5%, SMAP 98%"),
    ],
)
def test_the_rules_verdict_on_each_record_is_the_one_quoted(record, pick, margins):
    quoted, _ = _quoted_verdict(_counts("telemanom-recipe-batches"), load_late(record))
    assert quoted in _doc()
    assert f"the pick `{pick}` stays ahead of the default in all {margins}" in quoted
    assert quoted.endswith("stays")


def test_the_spike_rules_warm_key_joins_the_24_earlier_runs_unchanged():
    spikes = load_late(SPIKES)
    grid = load_grid(REPO / "docs" / "threshold-race-batches-spikes.json")
    assert list(spikes) == [v.name for v in grid]
    warm = load_late(WARM)
    for name, res in warm.items():
        assert spikes[name].injected == res.injected, name
    scores = label_free_scores(spikes)
    rows = {r[0]: r for r in _table(SPIKES_HEADER)}
    for shown, name in (
        ("the default", "telemanom, buffer 100, relearn 100, spikes ×1.5, lead 49"),
        ("telemanom's batches", "telemanom's batches, one batch late, lead 69"),
        ("telemanom's batches, spikes ×1.5", grid[-1].name),
    ):
        quoted = rows[shown][1:3]
        assert [f"{scores[name][c].injected_f1:.3f}" for c in ("MSL", "SMAP")] == quoted, shown


def test_the_settled_count_is_the_one_quoted_and_its_pick_the_default():
    settled = load_late(SETTLED)
    quoted, incumbent = _quoted_verdict(_counts("telemanom-recipe-batches"), settled)
    assert quoted in _doc()
    assert f"the pick is the default, `{incumbent}`: it stays" in quoted
    scores = label_free_scores(settled)
    mean = {n: (s["MSL"].injected_f1 + s["SMAP"].injected_f1) / 2 for n, s in scores.items()}
    assert f"{mean[incumbent]:.4f}" == "0.7468"
    assert f"{mean['telemanom, buffer 25, relearn 50, spikes ×2, warm-up 500']:.4f}" == "0.7448"


# The thirty-eighth look's: the deployed detector on the same warm key, and counted from step
# 351 (its window, 251, plus 100).
DEPLOYED = REPO / "docs" / "late-key" / "lstm_dt_np10-batches-warm.json.gz"
DEPLOYED_SETTLED = REPO / "docs" / "late-key" / "lstm_dt_np10-batches-warm-settled.json.gz"
DEPLOYED_HEADER = (
    "| threshold | late key MSL | held-out key MSL | episodes/1k cross-fitted train MSL |"
)


@pytest.mark.parametrize("record", [DEPLOYED, DEPLOYED_SETTLED])
def test_the_deployed_detectors_warm_key_keeps_the_default_as_quoted(record):
    quoted, incumbent = _quoted_verdict(_counts("lstm_dt_np10-batches"), load_late(record))
    assert quoted in _doc()
    assert f"the pick is the default, `{incumbent}`: it stays" in quoted


def test_the_deployed_detectors_key_is_the_documents_table_and_loses_the_pairwise_test():
    from stream_detector.evaluation.crossfit_injection import compare_report

    deployed = load_late(DEPLOYED)
    scores = label_free_scores(deployed)
    rows = _table(DEPLOYED_HEADER)
    assert [r[0] for r in rows] == [v.name for v in GRID]
    for row in rows:
        assert [f"{scores[row[0]][c].injected_f1:.3f}" for c in ("MSL", "SMAP")] == [
            row[1],
            row[4],
        ], row[0]
    incumbent = incumbent_variant(GRID, Settings())
    assert incumbent is not None
    text = compare_report(
        load_late(WARM)[incumbent],
        deployed[incumbent],
        ("telemanom's training", "deployed"),
        incumbent,
    )
    assert "in all 73.5%, MSL 84.7%, SMAP 41.6% of 1,000 paired draws" in text
    assert text.strip() in _doc()


# Detectors put against the deployed one on the same warm key, each by its look's rule: the
# forty-first look's analogues (knn_dt) and the forty-second's geometric mean of the two.
CHALLENGERS = [
    ("knn_dt-batches", "knn_dt", "in all 85.2%, MSL 26.4%, SMAP 98.4% of 1,000 paired draws"),
    ("geo-batches", "geometric", "in all 95.7%, MSL 37.7%, SMAP 99.3% of 1,000 paired draws"),
    ("gated-batches", "gated", "in all 70.5%, MSL 46.5%, SMAP 84.4% of 1,000 paired draws"),
]


@pytest.mark.parametrize(("record", "name", "draws"), CHALLENGERS)
def test_a_challengers_warm_key_keeps_the_default_threshold_and_the_deployed_detector(
    record: str, name: str, draws: str
):
    from stream_detector.evaluation.crossfit_injection import compare_report

    challenger = load_late(REPO / "docs" / "late-key" / f"{record}-warm.json.gz")
    quoted, incumbent = _quoted_verdict(_counts(record), challenger)
    assert quoted in _doc()
    assert quoted.endswith(f"the default `{incumbent}` stays")
    text = compare_report(
        load_late(DEPLOYED)[incumbent], challenger[incumbent], ("deployed", name), incumbent
    )
    assert draws in text
    assert text.strip() in _doc()


# The forty-fourth look's MSL half: the deployed detector trained again on a new machine, its
# default and two shorter windows on the same warm key.
WINDOW_GRID = load_grid(REPO / "docs" / "threshold-window-only.json")
WINDOW = REPO / "docs" / "late-key" / "lstm_dt_np10-window-msl-warm.json.gz"


def test_the_windows_msl_key_keeps_the_default_as_quoted_and_reproduces_the_deployed_runs():
    counts = _counts("lstm_dt_np10-window-msl", WINDOW_GRID)
    window = load_late(WINDOW)
    assert list(window) == [v.name for v in WINDOW_GRID]
    quoted, incumbent = _quoted_verdict(counts, window, WINDOW_GRID)
    assert incumbent == WINDOW_GRID[0].name
    assert quoted in _doc()
    assert "stays ahead of the default in all 60%, MSL 60% of 1,000 draws" in quoted
    assert quoted.endswith(f"the default `{incumbent}` stays")

    # Trained again from a clean checkout, the default's MSL runs are the recorded ones, run
    # for run, and so are its episodes on the cross-fitted train.
    deployed = load_late(DEPLOYED)[incumbent]
    fresh = window[incumbent]
    msl = {r.chan_id for r in fresh.injected_rows}
    assert {r.chan_id for r in deployed.injected_rows if r.spacecraft == "MSL"} == msl
    recorded = [
        (r.chan_id, c)
        for r, c in zip(deployed.injected_rows, deployed.injected, strict=True)
        if r.chan_id in msl
    ]
    assert recorded == list(
        zip([r.chan_id for r in fresh.injected_rows], fresh.injected, strict=True)
    )
    deployed_counts = _counts("lstm_dt_np10-batches")[incumbent]["MSL"]
    assert (counts[incumbent]["MSL"].episodes, counts[incumbent]["MSL"].steps) == (
        deployed_counts.episodes,
        deployed_counts.steps,
    )
