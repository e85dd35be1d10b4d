from stream_detector.sinks.silences import Silence, silence_for


def _silence(pattern: str, until: float, sid: str = "s1") -> Silence:
    return Silence(id=sid, pattern=pattern, until=until, created_at=0.0)


def test_exact_channel_and_globs():
    assert _silence("A-1", 100).matches("A-1", now=50)
    assert not _silence("A-1", 100).matches("A-10", now=50)
    assert _silence("A-*", 100).matches("A-10", now=50)
    assert _silence("[AB]-?", 100).matches("B-7", now=50)
    assert not _silence("[AB]-?", 100).matches("C-7", now=50)
    assert not _silence("a-*", 100).matches("A-1", now=50)  # channel ids are case-sensitive


def test_a_silence_ends_at_its_time():
    s = _silence("*", 100)
    assert s.matches("X", now=99.9) and not s.matches("X", now=100)


def test_first_covering_silence_wins():
    book = [_silence("B-*", 100, "b"), _silence("*", 100, "all")]
    assert silence_for("B-1", book, now=0).id == "b"
    assert silence_for("C-1", book, now=0).id == "all"
    assert silence_for("C-1", book, now=200) is None
