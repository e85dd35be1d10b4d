import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_detector.buffers import ChannelBuffer
from stream_detector.errors import BadRecord


def _series(n: int, f: int = 3) -> np.ndarray:
    return np.arange(n * f, dtype=np.float32).reshape(n, f)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 80),
    window=st.integers(1, 12),
    stride=st.integers(1, 5),
    chunks=st.lists(st.integers(1, 9), min_size=1, max_size=40),
)
def test_windows_do_not_depend_on_record_chunking(n, window, stride, chunks):
    x = _series(n)
    buf = ChannelBuffer("c", window, 3, stride)
    got = []
    pos, i = 0, 0
    while pos < n:
        size = chunks[i % len(chunks)]
        got.extend(buf.push(pos, float(pos), 1.0, x[pos : pos + size]))
        pos += size
        i += 1
    expected_ends = [e for e in range(window - 1, n) if (e - window + 1) % stride == 0]
    assert [w.end_seq for w in got] == expected_ends
    for w in got:
        np.testing.assert_array_equal(w.data, x[w.end_seq - window + 1 : w.end_seq + 1])
        assert w.end_ts == float(w.end_seq)


def test_snapshot_restore_continues_identically():
    x = _series(50)
    whole = ChannelBuffer("c", 7, 3, 2)
    ref = whole.push(0, 0.0, 1.0, x)
    first = ChannelBuffer("c", 7, 3, 2)
    part = first.push(0, 0.0, 1.0, x[:23])
    restored = ChannelBuffer.restore("c", 7, 3, 2, first.snapshot())
    part += restored.push(23, 23.0, 1.0, x[23:])
    assert [w.end_seq for w in part] == [w.end_seq for w in ref]
    for a, b in zip(part, ref, strict=True):
        np.testing.assert_array_equal(a.data, b.data)


def test_sequence_backwards_is_a_bad_record_and_changes_nothing():
    buf = ChannelBuffer("c", 3, 3)
    buf.push(0, 0.0, 1.0, _series(5))
    before = buf.contents()
    with pytest.raises(BadRecord) as info:
        buf.push(4, 0.0, 1.0, _series(1))
    assert info.value.reason == "sequence_backwards"
    np.testing.assert_array_equal(buf.contents(), before)


def test_gap_restarts_the_window():
    buf = ChannelBuffer("c", 3, 3)
    assert len(buf.push(0, 0.0, 1.0, _series(3))) == 1
    assert buf.push(10, 0.0, 1.0, _series(2)) == []  # only 2 steps since the gap
    assert buf.gaps == 1
    assert [w.end_seq for w in buf.push(12, 0.0, 1.0, _series(1))] == [12]


def test_wrong_width_is_rejected():
    with pytest.raises(BadRecord) as info:
        ChannelBuffer("c", 3, 3).push(0, 0.0, 1.0, np.zeros((1, 2), np.float32))
    assert info.value.reason == "wrong_value_count"
