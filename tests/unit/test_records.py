import json
import math

import numpy as np
import pytest

from stream_detector.errors import BadRecord
from stream_detector.records import (
    AlertRecord,
    DeadLetterRecord,
    ModelInfo,
    alert_id_for,
    parse_telemetry,
    telemetry_bytes,
)


def test_round_trip_of_encoded_record():
    values = np.array([[0.5, 1.0], [0.25, 0.0]], dtype=np.float32)
    rec = parse_telemetry(telemetry_bytes("A-1", 7, 100.0, values, period_s=2.0), n_features=2)
    assert rec.channel == "A-1" and rec.seq == 7 and rec.last_seq == 8
    assert rec.last_ts == 102.0
    np.testing.assert_array_equal(rec.values, values)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json at all", "not_json"),
        (b"\xff\xfe", "not_json"),
        (None, "not_json"),
        (b"[1, 2]", "invalid_schema"),
        (b'{"v": 1, "channel": "A-1", "ts": 0, "seq": 0}', "invalid_schema"),
        (b'{"v": 2, "channel": "A-1", "ts": 0, "seq": 0, "values": [[1]]}', "invalid_schema"),
        (b'{"v": 1, "channel": "A-1", "ts": 0, "seq": -1, "values": [[1]]}', "invalid_schema"),
        (
            b'{"v": 1, "channel": "A-1", "ts": 0, "seq": 0, "values": [[1], [1, 2]]}',
            "ragged_values",
        ),
        (b'{"v": 1, "channel": "A-1", "ts": 0, "seq": 0, "values": [[1, 2]]}', "wrong_value_count"),
        (b'{"v": 1, "channel": "A-1", "ts": 0, "seq": 0, "values": [[NaN]]}', "non_finite"),
        (b'{"v": 1, "channel": "A-1", "ts": 0, "seq": 0, "values": [[Infinity]]}', "non_finite"),
        (b'{"v": 1, "channel": "A-1", "ts": 0, "seq": 0, "values": [[1e39]]}', "non_finite"),
        (
            b'{"v": 1, "channel": "bad channel!", "ts": 0, "seq": 0, "values": [[1]]}',
            "invalid_schema",
        ),
    ],
)
def test_bad_records_have_a_stable_reason(raw, reason):
    with pytest.raises(BadRecord) as info:
        parse_telemetry(raw, n_features=1)
    assert info.value.reason == reason


def test_alert_id_is_deterministic_and_distinguishes_episodes():
    model = ModelInfo(name="lstm_ae", version="abc")
    assert alert_id_for("A-1", model, 10) == alert_id_for("A-1", model, 10)
    assert alert_id_for("A-1", model, 10) != alert_id_for("A-1", model, 11)
    assert alert_id_for("A-1", model, 10) != alert_id_for("A-2", model, 10)


def test_alert_record_json_round_trip_with_missing_threshold():
    alert = AlertRecord(
        alert_id="x",
        revision=0,
        channel="A-1",
        state="open",
        first_seq=1,
        last_seq=2,
        first_ts=0.0,
        last_ts=1.0,
        score=2.0,
        peak_score=2.0,
        threshold=None,
        threshold_kind="ewma_sigma",
        model=ModelInfo(name="m", version="v"),
        detected_at=5.0,
    )
    assert AlertRecord.model_validate_json(alert.to_bytes()) == alert


def test_dead_letter_keeps_original_bytes():
    raw = b"\x00\x01 not json"
    dead = DeadLetterRecord.from_failure(
        BadRecord("not_json", "x"), topic="t", partition=1, offset=9, key=b"A-1", value=raw
    )
    back = DeadLetterRecord.model_validate_json(dead.to_bytes())
    assert back.original_value() == raw and back.reason == "not_json" and back.offset == 9
    assert json.loads(dead.to_bytes())["key"] == "A-1"
    assert not math.isnan(back.failed_at)
