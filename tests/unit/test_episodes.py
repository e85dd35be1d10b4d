import pytest

from stream_detector.alerts.episodes import EpisodeRules, EpisodeState, step_episode


def _run(flags, rules, scores=None, stride=1):
    state = EpisodeState()
    events = []
    for i, flag in enumerate(flags):
        score = scores[i] if scores else (2.0 if flag else 0.5)
        ev = step_episode(
            state,
            rules,
            seq=i * stride,
            ts=float(i),
            score=score,
            threshold=1.0,
            anomalous=flag,
            stride=stride,
        )
        if ev:
            events.append(ev)
    return events


def test_open_then_resolve_after_hold_down():
    events = _run([0, 1, 1, 0, 0, 0, 0], EpisodeRules(hold_down=3))
    assert [(e.kind, e.first_seq, e.last_seq, e.revision) for e in events] == [
        ("open", 1, 1, 0),
        ("resolve", 1, 2, 1),
    ]


def test_short_dips_do_not_split_an_episode():
    events = _run([1, 0, 1, 0, 0, 1, 0, 0, 0], EpisodeRules(hold_down=3))
    assert [e.kind for e in events] == ["open", "resolve"]
    assert events[-1].last_seq == 5


def test_n_of_m_opens_at_the_first_hit():
    rules = EpisodeRules(min_hits=2, hit_window=3, hold_down=2)
    assert _run([1, 0, 0, 0, 1], rules) == []  # hits too far apart
    events = _run([0, 1, 0, 1, 0, 0], rules, stride=5)
    assert events[0].kind == "open" and events[0].first_seq == 5 and events[0].last_seq == 15


def test_update_when_peak_grows():
    events = _run([1, 1, 1], EpisodeRules(update_ratio=1.5), scores=[2.0, 2.5, 3.1])
    assert [e.kind for e in events] == ["open", "update"]
    assert events[1].peak == 3.1 and events[1].revision == 1


def test_state_survives_a_json_round_trip_mid_episode():
    import json

    rules = EpisodeRules(hold_down=2)
    state = EpisodeState()
    step_episode(state, rules, seq=0, ts=0.0, score=2.0, threshold=1.0, anomalous=True)
    back = EpisodeState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert back == state


def test_rules_validate():
    with pytest.raises(ValueError):
        EpisodeRules(min_hits=3, hit_window=2)


def test_suppression_after_resolve():
    rules = EpisodeRules(hold_down=2, suppress=3)
    events = _run([1, 0, 0, 1, 1, 1, 0, 1, 0, 0], rules)
    # resolve at seq 2 → quiet through seq 5; the hit at 7 opens the next episode
    assert [(e.kind, e.first_seq) for e in events] == [
        ("open", 0),
        ("resolve", 0),
        ("open", 7),
        ("resolve", 7),
    ]


def test_lead_back_dates_the_start_but_never_into_the_previous_episode():
    rules = EpisodeRules(min_hits=2, hit_window=2, hold_down=2, lead=3)
    flags = [0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0]
    events = _run(flags, rules)
    # First episode: first hit 5, back-dated 3 steps, its time at the pace of the hits.
    assert (events[0].kind, events[0].first_seq, events[0].first_ts) == ("open", 2, 2.0)
    assert (events[1].kind, events[1].first_seq, events[1].last_seq) == ("resolve", 2, 6)
    # Second: first hit 9, but seq 6 closed the first episode, so it starts at 7.
    assert (events[2].kind, events[2].first_seq) == ("open", 7)
    # Near the stream's start the lead stops at seq 0.
    assert _run([1, 1, 0, 0], rules)[0].first_seq == 0


def test_lead_survives_a_json_round_trip_between_episodes():
    import json

    rules = EpisodeRules(hold_down=1, lead=10)
    state = EpisodeState()
    for seq, flag in enumerate([1, 0]):
        step_episode(state, rules, seq=seq, ts=0.0, score=1.0, threshold=1.0, anomalous=bool(flag))
    back = EpisodeState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert back.last_end == 0
    event = step_episode(back, rules, seq=5, ts=0.0, score=2.0, threshold=1.0, anomalous=True)
    assert event is not None and event.first_seq == 1
