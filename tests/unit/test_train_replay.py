"""Each threshold of a grid over the whole train split: one real cache, counted by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_detector.evaluation import train_replay as tr

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "smap_msl"


def test_the_rate_is_per_thousand_scored_steps():
    assert tr.ReplayCount(3, 1500).per_1k == pytest.approx(2.0)
    assert tr.ReplayCount().per_1k == 0.0  # nothing scored: no rate, no division by zero


def test_a_grid_over_one_channels_train_split(d11_cache, tmp_path):
    from click.testing import CliRunner

    from stream_detector.data.smap_msl import load_series
    from stream_detector.evaluation.threshold_grid import ThresholdVariant, run_engine
    from stream_detector.serving import ServedModel
    from stream_detector.settings import Settings
    from stream_detector.training.checkpoint import load_checkpoint

    default = ThresholdVariant(
        "default", Settings().threshold.model_dump(), Settings().alerts.model_dump()
    )
    # A fixed threshold under every score: the whole stream is one episode.
    always = ThresholdVariant("always", {"kind": "fixed", "params": {"value": 1e-12}})
    cache = d11_cache
    counts = tr.replay_train(DATA, "smap", cache, [default, always], ["D-11"])
    train = load_series(DATA, "D-11", "train")
    scored = len(train) - 30 + 1  # one score per full window
    assert counts["always"]["SMAP"] == tr.ReplayCount(1, scored)
    # The default's count is the engine's own on the same stream, scored afresh.
    model = ServedModel(load_checkpoint(cache / "D-11.pt", device="cpu"))
    episodes = run_engine(default.settings(Settings()), model, "D-11", train, None).episodes()
    assert counts["default"]["SMAP"] == tr.ReplayCount(len(episodes), scored)
    grid = tmp_path / "grid.json"
    grid.write_text(
        '[{"name": "always", "threshold": {"kind": "fixed", "params": {"value": 1e-12}}}]'
    )
    args = ["--cache", str(cache), "--thresholds", str(grid), "--data-root", str(DATA)]
    out = CliRunner().invoke(tr.main, [*args, "--channel", "D-11", "--dataset", "smap"])
    assert out.exit_code == 0, out.output
    assert f"| always | SMAP | 1 | {scored:,} | {1000 / scored:.2f} |" in out.output
    missing = CliRunner().invoke(tr.main, [*args, "--channel", "A-1"])
    assert missing.exit_code != 0 and "has no model of A-1" in missing.output


def test_the_agreement_ranks_replay_and_held_out_counts_against_test_false_episodes():
    from stream_detector.data.smap_msl import LabelRow
    from stream_detector.evaluation.metrics import ChannelCounts
    from stream_detector.evaluation.threshold_grid import VariantResult

    row = LabelRow("A-1", "SMAP", [(0, 1)], ["point"], 10)

    def result(
        test_false: int, held_out: int, oracle: bool = False, test_episodes: int = 0
    ) -> VariantResult:
        # `test_episodes` episodes in all on the test stream, whatever the labels say: what
        # the label-free transfer ρ reads (`unlabelled_alarm_rate`), not `test_false`.
        predicted = [(2 * i, 2 * i) for i in range(test_episodes)]
        counts = ChannelCounts("A-1", 10, [(0, 1)], predicted, 1, 0, test_false, 2, 2, 2, 2)
        res = VariantResult(counts=[counts], rows=[row], oracle=oracle)
        res.validation_rows, res.validation_by_channel = [row], [held_out]
        res.validation_steps_by_channel = [100]
        return res

    results = {
        # The test streams' episodes, counted without labels, run the other way round from
        # their false episodes: the two ρ must come from different columns.
        "a": result(1, 0, test_episodes=4),
        "b": result(2, 0, test_episodes=3),
        "c": result(3, 1, test_episodes=2),
        "oracle": result(0, 9, oracle=True),  # fitted on the labels: never ranked
    }
    counts = {
        "a": {"SMAP": tr.ReplayCount(5, 100)},
        "b": {"SMAP": tr.ReplayCount(7, 100)},
        "c": {"SMAP": tr.ReplayCount(9, 100)},
        "oracle": {"SMAP": tr.ReplayCount(1, 100)},
        "not in the grid": {"SMAP": tr.ReplayCount(0, 100)},
    }
    agreement = tr.replay_agreement(counts, results)["SMAP"]
    assert agreement.n_variants == 3
    assert agreement.with_test_false == pytest.approx(1.0)
    # Held-out ranks (0.5, 0.5, 2) against (0, 1, 2): ρ = 1.5 / √(1.5 · 2) = √0.75.
    assert agreement.held_out_with_test_false == pytest.approx(0.75**0.5)
    # Transfer, no label read: the replay's rates (50, 70, 90 per 1k) against the test
    # streams' (400, 300, 200 per 1k) rank exactly the other way; the held-out part's false
    # rates (0, 0, 10 per 1k) against them give −√0.75.
    assert agreement.transfer == pytest.approx(-1.0)
    assert agreement.held_out_transfer == pytest.approx(-(0.75**0.5))
    assert not agreement.transfers
    text = tr.agreement_lines({"SMAP": agreement}, "train")
    assert "SMAP: ρ 1.00 for the train, 0.87 for the held-out part (3 variants)" in text
    assert "SMAP: ρ -1.00 for the train (fails), -0.87 for the held-out part (3 variants)" in text
    assert text.index("reads no label") < text.index("reads test labels")
    passing = tr.replay_agreement({n: counts[n] for n in "cba"}, results)["SMAP"]
    # Same counts, other variant order: ρ does not depend on the order of the grid.
    assert passing.transfer == pytest.approx(-1.0)
    flipped = {n: {"SMAP": tr.ReplayCount(c, 100)} for n, c in zip("abc", (9, 7, 5), strict=True)}
    assert tr.replay_agreement(flipped, results)["SMAP"].transfers
