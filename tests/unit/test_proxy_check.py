"""The label-free check of the written rule's proxy, on hand-made grid results."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from stream_detector.data.smap_msl import LabelRow
from stream_detector.evaluation import proxy_check, threshold_grid
from stream_detector.evaluation.metrics import count_channel

HIT, FALSE = (10, 19), (60, 69)


def _variant(
    found: list[list[bool]],
    test_episodes: list[int],
    clean_episodes: int = 0,
    false_in_injected: int = 0,
    craft: str = "SMAP",
    oracle: bool = False,
) -> threshold_grid.VariantResult:
    """Per channel, whether each of its eight copies' injected anomaly is found; how many
    episodes the variant raises on its test stream (no label overlaps them: labels at 900);
    clean held-out episodes and false episodes in its first injected run (channel 0)."""
    res = threshold_grid.VariantResult(oracle=oracle)
    for i, (copies, episodes) in enumerate(zip(found, test_episodes, strict=True)):
        row = LabelRow(f"C-{i}", craft, [(900, 909)], ["point"], 1000)
        for copy, hit in enumerate(copies):
            predicted = [HIT] if hit else []
            if i == 0 and copy == 0:
                predicted += [(60 + 10 * k, 61 + 10 * k) for k in range(false_in_injected)]
            res.injected.append(count_channel(row.chan_id, [HIT], predicted, 100))
            res.injected_rows.append(row)
            res.injected_kinds.append(["spike"])
        res.validation_rows.append(row)
        res.validation_by_channel.append(clean_episodes if i == 0 else 0)
        res.validation_steps_by_channel.append(1000)
        test = [(10 * k, 10 * k + 1) for k in range(episodes)]
        res.rows.append(row)
        res.counts.append(count_channel(row.chan_id, row.anomaly_sequences, test, 1000))
    return res


def test_copies_are_numbered_per_channel_and_split_up_from_down():
    res = _variant([[True] * 8, [False] * 8], [0, 0])
    assert proxy_check.copy_numbers(res) == list(range(8)) * 2
    assert [proxy_check.copy_half(c) for c in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    up = proxy_check.half_of(res, 0)
    assert len(up.injected) == 8 and {r.chan_id for r in up.injected_rows} == {"C-0", "C-1"}
    assert len(up.validation_rows) == 2  # the clean runs stay whole


def test_false_rates_count_clean_and_injected_false_episodes_and_test_episodes_unlabelled():
    res = _variant([[True] * 8, [True] * 8], [3, 1], clean_episodes=2, false_in_injected=3)
    # (2 clean + 3 injected false episodes) over 2 × 1000 clean + 16 × 100 injected steps.
    assert proxy_check.held_out_false_rate(res, "SMAP") == pytest.approx(1000 * 5 / 3600)
    # A channel listed in two label rows counts once.
    res.rows.append(res.rows[0])
    res.counts.append(res.counts[0])
    assert proxy_check.unlabelled_alarm_rate(res, "SMAP") == pytest.approx(1000 * 4 / 2000)
    assert proxy_check.unlabelled_alarm_rate(res, "MSL") == 0.0
    # Four episodes of two points each, over two channels of 1000.
    assert proxy_check.flagged_share(res, "SMAP") == pytest.approx(8 / 2000)


def test_spearman_brown_steps_the_halves_up():
    assert proxy_check.spearman_brown(0.6) == pytest.approx(0.75)
    assert proxy_check.spearman_brown(1.0) == pytest.approx(1.0)
    assert math.isnan(proxy_check.spearman_brown(math.nan))


def _found(up: int, down: int) -> list[list[bool]]:
    """Four channels; `up` of them find their up copies, `down` their down copies."""
    return [[i < up] * 4 + [i < down] * 4 for i in range(4)]


def test_a_proxy_whose_halves_agree_and_whose_quiet_half_transfers_passes():
    results = {
        "a": _variant(_found(4, 3), [1, 0, 0, 0], clean_episodes=0),
        "b": _variant(_found(2, 2), [1, 1, 0, 0], clean_episodes=1),
        "c": _variant(_found(1, 0), [2, 1, 1, 0], clean_episodes=2),
        # Fitted on the test labels: left out, or the halves would disagree.
        "oracle": _variant(_found(0, 4), [0, 0, 0, 0], oracle=True),
    }
    check = proxy_check.check_proxy(results)["SMAP"]
    assert check.variants == ("a", "b", "c")
    assert check.half_rho == pytest.approx(1.0) and check.reliable
    assert check.transfer == pytest.approx(1.0) and check.transfers
    # The best on the injected anomalies flags the fewest test points.
    assert check.volume == pytest.approx(-1.0) and check.ignores_volume and check.passed
    assert proxy_check.all_passed({"SMAP": check})
    assert proxy_check.half_picks(results) == ("a", "a", "a")


def test_a_proxy_whose_halves_disagree_or_whose_quiet_half_is_flat_fails():
    results = {
        "a": _variant(_found(4, 0), [1, 0, 0, 0]),
        "b": _variant(_found(2, 2), [1, 1, 0, 0]),
        "c": _variant(_found(0, 4), [2, 1, 1, 0]),
    }
    check = proxy_check.check_proxy(results)["SMAP"]
    assert check.half_rho == pytest.approx(-1.0) and not check.reliable
    # No held-out false episode anywhere: the quiet half cannot rank anything.
    assert math.isnan(check.transfer) and not check.transfers
    assert not proxy_check.all_passed({"SMAP": check})
    up, down, _ = proxy_check.half_picks(results)
    assert (up, down) == ("a", "c")


def test_proxy_check_command_reports_and_exits_by_the_bars(tmp_path):
    from stream_detector.cli import main

    passing = {
        "a": _variant(_found(4, 3), [1, 0, 0, 0], clean_episodes=0),
        "b": _variant(_found(2, 2), [1, 1, 0, 0], clean_episodes=1),
        "c": _variant(_found(1, 0), [2, 1, 1, 0], clean_episodes=2),
    }
    grid = tmp_path / "grid.json"
    grid.write_text(
        '[{"name": "a", "threshold": {"kind": "train_quantile"}, "alerts": {}},'
        ' {"name": "b", "threshold": {"kind": "train_quantile"}, "alerts": {}},'
        ' {"name": "c", "threshold": {"kind": "train_quantile"}, "alerts": {}}]'
    )
    runner = CliRunner()
    path = threshold_grid.save_results(passing, tmp_path / "pass" / threshold_grid.RESULTS_FILE)
    result = runner.invoke(main, ["proxy-check", str(path.parent), "--thresholds", str(grid)])
    assert result.exit_code == 0, result.output
    assert "| SMAP | 3 | 1.00 | 1.00 (passes) | 1.00 (passes) | -1.00 (passes) |" in result.output

    failing = dict(passing, c=_variant(_found(4, 0), [0, 0, 0, 0], clean_episodes=3))
    path = threshold_grid.save_results(failing, tmp_path / "fail" / threshold_grid.RESULTS_FILE)
    result = runner.invoke(main, ["proxy-check", str(path), "--thresholds", str(grid)])
    assert result.exit_code == 1
    assert "(fails)" in result.output

    other = tmp_path / "other.json"
    other.write_text('[{"name": "z", "threshold": {"kind": "train_quantile"}, "alerts": {}}]')
    result = runner.invoke(main, ["proxy-check", str(path), "--thresholds", str(other)])
    assert result.exit_code == 2 and "--thresholds" in result.output


def test_a_proxy_that_ranks_by_the_points_flagged_fails_the_volume_test():
    results = {
        # The more a variant finds of the injected anomalies, the more test points it flags.
        "a": _variant(_found(4, 4), [3, 3, 3, 3], clean_episodes=3),
        "b": _variant(_found(2, 2), [2, 2, 2, 2], clean_episodes=2),
        "c": _variant(_found(1, 1), [1, 1, 1, 1], clean_episodes=1),
    }
    check = proxy_check.check_proxy(results)["SMAP"]
    assert check.reliable and check.transfers
    assert check.volume == pytest.approx(1.0) and not check.ignores_volume
    assert not check.passed and not proxy_check.all_passed({"SMAP": check})
