"""Synthetic anomalies for label-free threshold selection."""

from __future__ import annotations

import numpy as np
import pytest

from stream_detector.evaluation.injection import KINDS, inject_anomalies


def _series(n: int = 900) -> np.ndarray:
    t = np.arange(n)
    return np.stack([np.sin(t / 20), np.zeros(n)], axis=1).astype(np.float32)


def test_anomalies_are_placed_apart_and_only_there() -> None:
    base = _series()
    out = inject_anomalies(base, seed=3, margin=60, length=40)
    assert len(out.sequences) == (900 - 60) // 100
    assert sorted(out.kinds) == sorted(KINDS * 2), "every kind as often"
    inside = np.zeros(len(base), bool)
    previous_end = 0
    for start, end in out.sequences:
        assert start - previous_end >= 60 or previous_end == 0
        assert 60 <= start <= end < len(base) - 1
        inside[start : end + 1] = True
        previous_end = end
    changed = np.any(out.values != base, axis=1)
    assert not np.any(changed & ~inside), "nothing outside the labelled sequences changes"
    assert np.array_equal(out.values[:, 1], base[:, 1]), "only the telemetry column"
    for (start, end), kind in zip(out.sequences, out.kinds, strict=True):
        assert np.any(changed[start : end + 1]), kind
    assert np.array_equal(base, _series()), "the input is not modified"


def test_sizes_follow_the_spread_and_the_seed_repeats() -> None:
    base = _series()
    a = inject_anomalies(base, seed=1, spread=0.5, magnitude=4.0)
    b = inject_anomalies(base, seed=1, spread=0.5, magnitude=4.0)
    assert np.array_equal(a.values, b.values) and a.sequences == b.sequences
    for (start, end), kind in zip(a.sequences, a.kinds, strict=True):
        delta = a.values[start : end + 1, 0] - base[start : end + 1, 0]
        if kind == "spike":
            assert end - start == 2 and np.allclose(np.abs(delta), 4.0)
        elif kind == "level_shift":
            assert np.allclose(np.abs(delta), 2.0)
    assert inject_anomalies(base, seed=2, spread=0.5).kinds != a.kinds  # another order


def test_too_short_a_series_gets_no_anomaly() -> None:
    out = inject_anomalies(_series(120), margin=60, length=40)
    assert out.sequences == [] and np.array_equal(out.values, _series(120))


def test_the_lead_stays_untouched() -> None:
    out = inject_anomalies(_series(), lead=300, margin=60, length=40)
    assert out.sequences[0][0] >= 360 and len(out.sequences) == (900 - 300 - 60) // 100
    assert np.array_equal(out.values[:360], _series()[:360])


def test_a_stretch_with_room_for_one_anomaly_still_gets_every_kind_across_channels() -> None:
    base = _series(400)  # room for one 150-step anomaly 100 from each end
    kinds = {
        k
        for seed in range(40)
        for k in inject_anomalies(base, seed=seed, length=150, margin=100).kinds
    }
    assert kinds == set(KINDS), "a fixed first kind would make every such anomaly a spike"


def test_a_column_without_spread_gets_no_anomaly_rather_than_one_of_size_zero() -> None:
    flat = np.ones((900, 2), dtype=np.float32)
    out = inject_anomalies(flat, spread=0.0, margin=60, length=40)
    assert out.sequences == [] and out.kinds == [] and np.array_equal(out.values, flat)
    # Without a given spread the floor applies, and the anomalies are real changes.
    floored = inject_anomalies(flat, margin=60, length=40)
    changed = np.any(floored.values != flat, axis=1)
    assert floored.sequences and all(changed[s : e + 1].any() for s, e in floored.sequences)


def test_count_and_kind_place_that_many_of_that_kind_in_random_slots() -> None:
    base = _series()
    slots = (len(base) - 60) // (40 + 60)
    every = inject_anomalies(base, seed=3, margin=60, length=40)
    assert len(every.sequences) == slots > 2
    starts = set()
    for seed in range(20):
        one = inject_anomalies(base, seed=seed, margin=60, length=40, count=1, kind="level_shift")
        assert one.kinds == ["level_shift"] and len(one.sequences) == 1
        ((start, end),) = one.sequences
        assert (start - 60) % 100 == 0 and end == start + 39  # on a slot of the full layout
        changed = np.flatnonzero(np.any(one.values != base, axis=1))
        assert changed.min() == start and changed.max() == end  # nothing outside it
        starts.add(start)
    assert len(starts) > 2  # the slot is drawn, not always the first
    two = inject_anomalies(base, seed=0, margin=60, length=40, count=2)
    assert len(two.sequences) == 2 and two.sequences == sorted(two.sequences)
    assert len(inject_anomalies(base, seed=0, margin=60, length=40, count=99).sequences) == slots
    with pytest.raises(ValueError, match="kind must be one of"):
        inject_anomalies(base, kind="drift")
    with pytest.raises(ValueError, match="sign must be"):
        inject_anomalies(base, count=1, sign=0)
    down = inject_anomalies(base, seed=0, margin=60, length=40, kind="level_shift", sign=-1)
    assert np.all(down.values[:, 0] <= base[:, 0]) and len(down.sequences) == slots
