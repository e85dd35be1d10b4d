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
