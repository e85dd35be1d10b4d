import json
import math

import numpy as np

from stream_detector.thresholds.state_codec import pack_state, unpack_state
from stream_detector.thresholds.telemanom import TelemanomThreshold


def _telemanom_state(steps: int = 600) -> dict:
    rng = np.random.default_rng(3)
    strategy = TelemanomThreshold()
    state = strategy.initial_state(None)
    for score, value in zip(
        np.abs(rng.normal(0, 0.05, steps)), rng.normal(0, 1, steps), strict=True
    ):
        state, _ = strategy.step(state, float(score), float(value))
    return state


def test_a_packed_state_reads_back_bit_for_bit_through_json() -> None:
    state = _telemanom_state()
    state["odd"] = [0.1, -0.0, 1e-300, 3.5e300] * 5 + [math.inf, -math.inf]
    restored = unpack_state(json.loads(json.dumps(pack_state(state))))
    assert restored.keys() == state.keys()
    for key, value in state.items():
        assert type(restored[key]) is type(value), key
        if isinstance(value, list):
            assert np.array_equal(
                np.asarray(restored[key]).view(np.int64), np.asarray(value).view(np.int64)
            ), key
        else:
            assert restored[key] == value, key


def test_only_long_float_lists_are_packed() -> None:
    state = {
        "floats": [float(i) for i in range(20)],
        "short": [1.5, 2.5],
        "ints": list(range(20)),  # would come back as floats: left alone
        "mixed": [1.0] * 19 + [None],
        "scalar": 0.25,
        "nested": {"a": 1},
    }
    packed = pack_state(state)
    assert set(packed["floats"]) == {"__f64__"}
    assert {k: packed[k] for k in state if k != "floats"} == {
        k: v for k, v in state.items() if k != "floats"
    }
    assert unpack_state(json.loads(json.dumps(packed))) == state


def test_a_state_saved_before_packing_passes_through() -> None:
    state = _telemanom_state(300)
    assert unpack_state(json.loads(json.dumps(state))) == state


def test_packing_makes_telemanoms_state_much_smaller() -> None:
    state = _telemanom_state(2500)
    plain, packed = len(json.dumps(state)), len(json.dumps(pack_state(state)))
    assert packed < plain / 1.8, (plain, packed)
