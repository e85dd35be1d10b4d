"""The replay counts recorded in docs/replay-counts were parsed from the tables of
docs/threshold-race.md that quote the runs; they must stay what those tables say, and
count the race grid's variants."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream_detector.evaluation.replay_counts import load_counts
from stream_detector.evaluation.threshold_grid import load_grid

REPO = Path(__file__).resolve().parents[2]
GRID = load_grid(REPO / "docs" / "threshold-race-lstm-dt.json")
BATCHES_GRID = load_grid(REPO / "docs" / "threshold-race-batches.json")


def _table(header_start: str) -> list[list[str]]:
    lines = (REPO / "docs" / "threshold-race.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _name(cell: str) -> str:
    return re.sub(r" \(the default\)$", "", cell)


# (files, a glob under docs/replay-counts; the table's header; {spacecraft: (column, scored
# steps)}; the grid they count)
RECORDED = [
    (
        "lstm_dt_np10-gpu.json",
        "| threshold (race grid) | SMAP: cross-fitted train (110,281 steps)",
        {"SMAP": (1, 110_281), "MSL": (4, 43_940)},
        GRID,
    ),
    (
        "telemanom-recipe-msl.json",
        "| threshold (race grid), MSL | episodes on the cross-fitted train (43,526 steps)",
        {"MSL": (1, 43_526)},
        GRID,
    ),
    (
        "telemanom-recipe-smap/crossfit-shard-*-of-8.json",
        "| threshold (race grid), SMAP | episodes on the cross-fitted train (109,399 steps)",
        {"SMAP": (1, 109_399)},
        GRID,
    ),
    (
        "telemanom-recipe-batches/crossfit-*.json",
        "| threshold (race grid and telemanom's batches) | MSL: episodes on the cross-fitted",
        {"MSL": (1, 43_526), "SMAP": (2, 109_399)},
        BATCHES_GRID,
    ),
    (
        "lstm_dt_np10-batches/crossfit-shard-*-of-2.json",
        "| threshold (race grid and telemanom's batches), the deployed detector |",
        {"MSL": (1, 43_940), "SMAP": (2, 110_281)},
        BATCHES_GRID,
    ),
]


@pytest.mark.parametrize(("pattern", "header", "columns", "grid"), RECORDED)
def test_the_recorded_counts_are_the_documents_tables(pattern, header, columns, grid):
    files = sorted((REPO / "docs" / "replay-counts").glob(pattern))
    assert files, pattern
    counts, _, stream = load_counts(files, grid)
    assert stream == "cross-fitted train"
    rows = _table(header)
    assert [_name(r[0]) for r in rows] == [v.name for v in grid]
    for row in rows:
        for craft, (column, steps) in columns.items():
            c = counts[_name(row[0])][craft]
            assert (c.episodes, c.steps) == (int(row[column]), steps), (row[0], craft)


def test_the_spike_rules_replay_counts_the_24_earlier_variants_as_recorded_before():
    """The thirty-sixth look replayed the cross-fitted train with 25 variants: the 24 earlier
    ones count what the thirty-third look recorded, the new one what its table says."""
    spikes_grid = load_grid(REPO / "docs" / "threshold-race-batches-spikes.json")
    assert [v.name for v in spikes_grid[:-1]] == [v.name for v in BATCHES_GRID]
    folder = REPO / "docs" / "replay-counts"
    before, _, _ = load_counts(sorted(folder.glob("telemanom-recipe-batches/*.json")), BATCHES_GRID)
    after, _, stream = load_counts(
        sorted(folder.glob("telemanom-recipe-batches-spikes/*.json")), spikes_grid
    )
    assert stream == "cross-fitted train"
    for name, by_craft in before.items():
        assert after[name] == by_craft, name
    new = after[spikes_grid[-1].name]
    assert (new["MSL"].episodes, new["SMAP"].episodes) == (20, 15)
    assert (new["MSL"].steps, new["SMAP"].steps) == (43_526, 109_399)
    table = _table("| | warm key MSL | warm key SMAP | cross-fitted episodes MSL / SMAP |")
    assert table[-1][0] == "telemanom's batches, spikes ×1.5" and table[-1][3] == "20 / 15"
