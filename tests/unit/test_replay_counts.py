"""A replay's counts recorded and read back: the file, its refusals, and the command that
judges from it as `crossfit_replay` judges from the fold models."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from stream_detector.evaluation import replay_counts as rc
from stream_detector.evaluation.threshold_grid import (
    RESULTS_FILE,
    ThresholdVariant,
    load_grid,
    save_results,
)
from stream_detector.evaluation.train_replay import ReplayCount
from stream_detector.settings import Settings
from tests.unit.test_threshold_grid import _result


def _grid(tmp_path, names):
    """A grid whose first variant is the settings' default threshold (the incumbent)."""
    default = Settings()
    entries = [
        {
            "name": names[0],
            "threshold": default.threshold.model_dump(),
            "alerts": default.alerts.model_dump(),
        }
    ]
    entries += [
        {"name": n, "threshold": {"kind": "fixed", "params": {"value": float(i + 1)}}}
        for i, n in enumerate(names[1:])
    ]
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(entries))
    return path


def _save(path, counts, stream="cross-fitted train", grid="grid.json", left_out=(), shard=None):
    rc.save_counts(
        path, counts, stream=stream, grid=grid, left_out=left_out, source="a test", shard=shard
    )
    return path


def test_counts_are_read_back_as_written_and_files_of_two_data_sets_merge(tmp_path):
    msl = {"a": {"MSL": ReplayCount(14, 43_940)}, "b": {"MSL": ReplayCount(3, 43_940)}}
    smap = {"a": {"SMAP": ReplayCount(17, 110_281)}, "b": {"SMAP": ReplayCount(0, 110_281)}}
    _save(tmp_path / "msl.json", msl, left_out=["S-2"])
    _save(tmp_path / "smap.json", smap, left_out=["D-12"])
    variants = [ThresholdVariant("a", {}), ThresholdVariant("b", {})]
    counts, left_out, stream = rc.load_counts([tmp_path / "msl.json"], variants)
    assert counts == msl and left_out == ["S-2"] and stream == "cross-fitted train"
    merged, left_out, _ = rc.load_counts([tmp_path / "msl.json", tmp_path / "smap.json"])
    assert merged["a"] == {"MSL": ReplayCount(14, 43_940), "SMAP": ReplayCount(17, 110_281)}
    assert merged["b"]["SMAP"].per_1k == 0.0 and left_out == ["S-2", "D-12"]


def test_the_shares_of_a_sharded_run_are_summed_and_all_of_them_are_needed(tmp_path):
    share = [
        {"a": {"SMAP": ReplayCount(3, 900), "MSL": ReplayCount(1, 400)}},
        {"a": {"SMAP": ReplayCount(2, 100)}},
        {"a": {"MSL": ReplayCount(0, 600)}},
    ]
    files = [_save(tmp_path / f"{i}.json", c, shard=f"{i}/3") for i, c in enumerate(share)]
    counts, _, _ = rc.load_counts(files)
    assert counts == {"a": {"SMAP": ReplayCount(5, 1000), "MSL": ReplayCount(1, 1000)}}
    with pytest.raises(ValueError, match="need every share: 1/3 not given"):
        rc.load_counts([files[0], files[2]])
    with pytest.raises(ValueError, match="share 0/3 is given twice"):
        rc.load_counts([*files, files[0]])
    whole = _save(tmp_path / "whole.json", {"a": {"MSL": ReplayCount(1, 1000)}})
    with pytest.raises(ValueError, match="MSL is counted in more than one file"):
        rc.load_counts([whole, *files])
    with pytest.raises(ValueError, match="MSL is counted in more than one file"):
        rc.load_counts([*files, whole])
    other = _save(tmp_path / "other.json", {"a": {"SMAP": ReplayCount(1, 10)}}, shard="0/2")
    with pytest.raises(ValueError, match="cut 3 and 2 ways"):
        rc.load_counts([*files, other])


def test_a_file_that_cannot_be_read_as_these_counts_is_refused_by_what_is_wrong(tmp_path):
    counts = {"a": {"MSL": ReplayCount(1, 10)}, "b": {"MSL": ReplayCount(2, 10)}}
    path = _save(tmp_path / "msl.json", counts)
    with pytest.raises(ValueError, match=r"another grid's variants .*not counted: \['c'\]"):
        rc.load_counts([path], [ThresholdVariant(n, {}) for n in "abc"])
    with pytest.raises(ValueError, match="MSL is counted in more than one file"):
        rc.load_counts([path, path])
    other = _save(tmp_path / "other.json", {"a": {"SMAP": ReplayCount(1, 10)}}, stream="train")
    with pytest.raises(ValueError, match="different streams"):
        rc.load_counts([path, other])
    stranger = tmp_path / "stranger.json"
    stranger.write_text('{"counts": {}}')
    with pytest.raises(ValueError, match="not a file of recorded replay counts"):
        rc.load_counts([stranger])


def test_the_command_judges_from_recorded_counts_as_the_replay_does(tmp_path):
    names = ["incumbent", "finds more", "noisy elsewhere"]
    grid = _grid(tmp_path, names)
    both = [("SMAP", 0), ("MSL", 0)]
    results = {
        "incumbent": _result(both, [(10, 19), None]),
        "finds more": _result(both, [(10, 19), (10, 19)]),
        "noisy elsewhere": _result(both, [(10, 19), (10, 19)]),
    }
    save_results(results, tmp_path / "race" / RESULTS_FILE)
    counts = {
        "incumbent": {"SMAP": ReplayCount(4, 1000), "MSL": ReplayCount(4, 1000)},
        "finds more": {"SMAP": ReplayCount(4, 1000), "MSL": ReplayCount(3, 1000)},
        "noisy elsewhere": {"SMAP": ReplayCount(5, 1000), "MSL": ReplayCount(1, 1000)},
    }
    files = []
    for craft in ("MSL", "SMAP"):  # one file per data set, as two sessions would write them
        one = {n: {craft: by[craft]} for n, by in counts.items()}
        files.append(str(_save(tmp_path / f"{craft}.json", one, left_out=[f"{craft}-x"])))
    args = [*files, "--thresholds", str(grid), "--against", str(tmp_path / "race")]
    out = CliRunner().invoke(rc.main, [*args, "--decide"])
    assert out.exit_code == 0, out.output
    expected = rc.replay_report(
        counts, "cross-fitted train", grid, tmp_path / "race", True, Settings()
    )
    assert out.output == expected + "\nleft out: MSL-x, SMAP-x\n"
    assert "| noisy elsewhere | SMAP | 5 | 1,000 | 5.00 |" in out.output
    assert "transfer to the test streams' episodes per 1,000 steps" in out.output
    assert "2 variants raise no more episodes" in out.output
    assert "the pick `finds more`" in out.output

    # Rule v5 judges every data set: one file alone is refused, by name.
    alone = CliRunner().invoke(rc.main, [files[0], *args[2:], "--decide"])
    assert alone.exit_code == 1 and "every data set the grid judges" in alone.output
    # Counts of another grid are refused before anything is judged.
    other = _grid(tmp_path, ["incumbent", "finds more"])
    refused = CliRunner().invoke(rc.main, [*files, "--thresholds", str(other)])
    assert refused.exit_code == 1 and "another grid's variants" in refused.output
    usage = CliRunner().invoke(rc.main, [*files, "--thresholds", str(grid), "--decide"])
    assert usage.exit_code == 2 and "--against" in usage.output
    assert load_grid(grid)[0].name == "incumbent"
