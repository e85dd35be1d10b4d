"""The streamed threshold's rules undone one at a time: hand-computed counts, and one real cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_detector.data.smap_msl import LabelRow
from stream_detector.evaluation import streamed_ablation as sa
from stream_detector.evaluation.metrics import count_channel
from stream_detector.settings import Settings, ThresholdSettings
from stream_detector.thresholds.base import build_threshold

N = 10_000
LABELS = [(3000, 3200), (6000, 6100)]


def _result(default: list[tuple[int, int]], other: list[tuple[int, int]], batch, lead=250):
    row = LabelRow("X-1", "SMAP", LABELS, ["contextual", "point"], N)
    result = sa.AblationResult(rows=[row], leads=[lead])
    result.batch.append(count_channel("X-1", LABELS, batch, N))
    for number in range(len(sa.ABLATIONS)):
        spans = default if number == 0 else other
        result.ablations[number].append(count_channel("X-1", LABELS, spans, N))
    return result


def test_changes_count_the_defaults_false_episodes_gone_the_new_ones_and_the_lost_finds():
    # The default: false at 500 and 8000, finds the first label. The other: keeps the false
    # episode at 8000 (shifted, still overlapping), drops 500, raises a new one at 9000, and
    # finds the second label instead of the first.
    default = [(500, 600), (3100, 3300), (8000, 8100)]
    other = [(6050, 6150), (8050, 8150), (9000, 9050)]
    result = _result(default, other, batch=[(8000, 8300)])
    assert sa.changes(result, 0, [0]) == sa.Changes(0, 0, 0)
    assert sa.changes(result, 1, [0]) == sa.Changes(false_gone=1, false_new=1, finds_lost=1)
    # Of the default's two false episodes, the batch form overlaps the one at 8000, and the
    # one at 500 starts within the first 2,100 scores (scores start at row 250).
    assert sa.false_places(result, [0]) == sa.FalsePlaces(total=2, in_batch=1, in_first_window=1)
    # With 2,000 rows of history before the first score, 8000 is still past the first window
    # (2,000 + 2,100 = 4,100) and 500 is inside it.
    assert sa.false_places(_result(default, other, [], lead=2000), [0]).in_first_window == 1
    assert sa.false_places(_result(default, other, [], lead=6000), [0]).in_first_window == 2


def test_the_table_has_a_line_per_ablation_the_batch_form_and_where_false_episodes_are():
    default = [(500, 600), (3100, 3300), (8000, 8100)]
    table = sa.ablation_table(_result(default, default[1:], batch=[(8000, 8300)]))
    lines = table.splitlines()
    assert lines[2].startswith("| the default | SMAP | 0.333 | 0.500 |")
    # An ablation without the episode at 500: that one false episode gone, nothing new, no
    # find lost.
    assert lines[3].startswith("| no spike rule | SMAP | 0.500 | 0.500 |")
    assert lines[3].endswith("| 1 | 1 | 0 | 0 |")
    assert lines[2 + len(sa.ABLATIONS)].startswith("| telemanom's 2018 batch form | SMAP | 0.000 |")
    assert (
        "SMAP: of the default's 2 false episodes, the batch form raises one overlapping 1; "
        "1 start within the first 2,100 scores." in table
    )


def test_each_ablation_changes_only_its_own_parameters_of_the_default():
    base = Settings()

    def described(settings: Settings) -> dict:
        t = settings.threshold
        return build_threshold(t.kind, **t.strategy_params()).describe()

    defaults = described(base)
    for name, change in sa.ABLATIONS:
        built = described(sa.ablation_settings(base, change))
        moved = {k for k in built if built[k] != defaults[k]}
        assert moved == set(change), name
    with pytest.raises(ValueError, match="telemanom's threshold, not 'ewma_sigma'"):
        sa.ablation_settings(Settings(threshold=ThresholdSettings(kind="ewma_sigma")), {})


DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "smap_msl"


def test_on_a_real_cache_the_first_row_is_the_streamed_default(d11_cache, tmp_path):
    from click.testing import CliRunner

    from stream_detector.evaluation import telemanom_batch as tb

    cache = d11_cache
    result = sa.run_ablations(DATA, "smap", cache, ["D-11"])
    batch = tb.run_batch(DATA, "smap", cache, ["D-11"])
    assert result.ablations[0] == batch.streamed and result.batch == batch.batch
    assert all(len(counts) == 1 for counts in result.ablations)
    out = CliRunner().invoke(
        sa.main, ["--cache", str(cache), "--channel", "D-11", "--data-root", str(DATA)]
    )
    assert out.exit_code == 0, out.output
    assert "| no spike rule | SMAP |" in out.output
    assert "SMAP: of the default's" in out.output
