"""Event-level scoring on hand-made cases."""

import numpy as np
import pytest

from stream_detector.evaluation.metrics import (
    count_channel,
    merge_spans,
    pr_auc,
    roc_auc,
    spans_from_flags,
    summarise,
)


def test_overlap_counts_a_labelled_sequence_once():
    c = count_channel("c", [(10, 20)], [(15, 16), (19, 25)], 100)
    assert (c.tp, c.fn, c.fp) == (1, 0, 0)
    assert c.predicted == [(15, 16), (19, 25)]
    assert c.flagged_points == 9 and c.true_flagged_points == 4
    assert c.delays == [5]


def test_adjacent_predictions_merge_and_a_miss_by_one_is_a_miss():
    c = count_channel("c", [(10, 20)], [(0, 4), (5, 9)], 100)
    assert c.predicted == [(0, 9)]
    assert (c.tp, c.fn, c.fp) == (0, 1, 1)


def test_empty_predictions():
    c = count_channel("c", [(10, 20), (50, 60)], [], 100)
    assert (c.tp, c.fn, c.fp, c.flagged_points) == (0, 2, 0, 0)
    m = summarise([c])
    assert m.precision == 0.0 and m.recall == 0.0 and m.f1 == 0.0 and m.mean_delay is None


def test_one_prediction_spanning_two_labels_finds_both():
    c = count_channel("c", [(10, 20), (30, 40)], [(15, 35)], 100)
    assert (c.tp, c.fn, c.fp) == (2, 0, 0)
    assert c.delays == [5, 0]  # it started before the second label: on time


def test_flagging_everything_scores_perfect_events_but_a_poor_composite():
    labels = [(10, 20), (70, 74)]
    m = summarise([count_channel("c", labels, [(0, 99)], 100)])
    assert m.precision == 1.0 and m.recall == 1.0 and m.f1 == 1.0
    assert m.flagged_fraction == 1.0
    assert m.point_precision == pytest.approx(16 / 100)
    assert m.composite_f1 == pytest.approx(2 * 0.16 / 1.16)


def test_aggregation_sums_counts_over_channels():
    a = count_channel("a", [(10, 20)], [(12, 12), (80, 85)], 100)
    b = count_channel("b", [(5, 6)], [], 50)
    m = summarise([a, b])
    assert (m.tp, m.fp, m.fn) == (1, 1, 1)
    assert m.precision == 0.5 and m.recall == 0.5
    assert m.f05 == pytest.approx(0.5)
    assert m.flagged_fraction == pytest.approx(7 / 150)
    assert m.point_precision == pytest.approx(1 / 7)
    # point-adjusted: the found segment counts whole (11 points), the missed one not at all
    adj_p = 11 / (7 + 10)
    adj_r = 11 / 13
    assert m.point_adjusted_f1 == pytest.approx(2 * adj_p * adj_r / (adj_p + adj_r))


def test_predictions_are_clipped_to_the_series():
    c = count_channel("c", [(95, 99)], [(90, 120), (-5, -1)], 100)
    assert c.predicted == [(90, 99)] and c.flagged_points == 10


def test_span_helpers():
    assert merge_spans([(5, 6), (1, 2), (3, 3)]) == [(1, 3), (5, 6)]  # 4 is a gap
    assert spans_from_flags(np.array([0, 1, 1, 0, 1], bool)) == [(1, 2), (4, 4)]
    with pytest.raises(ValueError):
        merge_spans([(3, 2)])


def test_roc_auc_by_hand():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    labels = np.array([0, 0, 1, 1], bool)
    assert roc_auc(scores, labels) == pytest.approx(0.75)
    assert roc_auc(np.array([1.0, 1.0]), np.array([0, 1], bool)) == pytest.approx(0.5)
    assert roc_auc(scores, np.zeros(4, bool)) is None


def test_pr_auc_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    labels = np.array([1, 0, 1, 0], bool)
    # precision at the recall steps: 1/1 at r=0.5, 2/3 at r=1.0
    assert pr_auc(scores, labels) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


DATA = (
    __import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "datasets" / "smap_msl"
)


@pytest.mark.skipif(not DATA.is_dir(), reason="SMAP/MSL data not found")
@pytest.mark.parametrize(
    ("spacecraft", "f1", "composite", "flagged"),
    [("SMAP", 0.867, 0.750, 0.045), ("MSL", 0.806, 0.562, 0.092)],
)
def test_scorer_reproduces_telemanoms_published_run(spacecraft, f1, composite, flagged):
    from stream_detector.evaluation.reference import telemanom_reference

    m = summarise(telemanom_reference(DATA, spacecraft))
    assert m.f1 == pytest.approx(f1, abs=5e-4)
    assert m.composite_f1 == pytest.approx(composite, abs=5e-4)
    assert m.flagged_fraction == pytest.approx(flagged, abs=5e-4)


@pytest.mark.skipif(not DATA.is_dir(), reason="SMAP/MSL data not found")
def test_any_telemanom_run_is_scored_on_our_label_rows(tmp_path):
    """A results file of telemanom's later code (num_values, its own label column) is scored
    on the label file's rows: here each row predicts its first label, A-1 one false sequence."""
    import csv

    from click.testing import CliRunner

    from stream_detector.data.smap_msl import load_labels
    from stream_detector.evaluation.reference import main, score_telemanom_run

    rows = load_labels(DATA)
    run = tmp_path / "2019-11-14_11.34.30.csv"
    with run.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["chan_id", "anomaly_sequences", "tp_sequences", "fp_sequences", "num_values"]
        )
        for row in rows:
            start, end = row.anomaly_sequences[0]
            writer.writerow(
                [
                    row.chan_id,
                    "[[0, 1]]",  # the run's own labels are not read
                    f"[({start}, {end})]",
                    "[[0, 9]]" if row.chan_id == "A-1" else "[]",
                    row.num_values,
                ]
            )
    counts = score_telemanom_run(run, DATA)
    assert len(counts) == 82
    total = summarise(counts)
    assert (total.tp, total.fp) == (82, 1)
    assert total.fn == sum(len(r.anomaly_sequences) for r in rows) - 82
    assert len(score_telemanom_run(run, DATA, "MSL")) == 27

    result = CliRunner().invoke(main, [str(run), "--data-root", str(DATA)])
    assert result.exit_code == 0, result.output
    assert "| 2018-05-19 (reference) | SMAP | 0.838 | 0.899 | 0.867 | 0.750 | 4.5% | 62 | 12 |" in (
        result.output
    )
    assert "| 2019-11-14_11.34.30 | MSL |" in result.output

    shuffled = tmp_path / "shuffled.csv"
    lines = run.read_text().splitlines()
    shuffled.write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")
    with pytest.raises(ValueError, match="label file's 82 rows in its order"):
        score_telemanom_run(shuffled, DATA)
    assert CliRunner().invoke(main, [str(shuffled), "--data-root", str(DATA)]).exit_code == 1
