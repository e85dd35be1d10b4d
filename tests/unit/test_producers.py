"""Producers without Kafka: bus order, chunks, seq/ts, pacing, synthetic truth, sender, CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from click.testing import CliRunner
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

from producers import (
    ANOMALY_KINDS,
    ChannelSeries,
    StepPacer,
    TelemetrySender,
    TelemetrySendError,
    anomaly_truth,
    interleave,
    make_synthetic_channels,
    replay,
    send_synthetic,
    stream_series,
)
from producers.cli import replay_command, synthetic_command
from producers.replay import available_channels, load_channels
from producers.synthetic import write_dataset, write_truth
from stream_detector.records import parse_telemetry, telemetry_bytes


class ListSender:
    """Records what would have gone to Kafka, encoded and parsed back like the daemon would."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, float, np.ndarray, float]] = []
        self.flushes = 0

    def send(self, channel: str, seq: int, ts: float, values: np.ndarray, period_s: float) -> None:
        parsed = parse_telemetry(telemetry_bytes(channel, seq, ts, values, period_s))
        self.sent.append((parsed.channel, parsed.seq, parsed.ts, parsed.values, parsed.period_s))

    def flush(self) -> None:
        self.flushes += 1


class FakeClock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def _series(*lengths: int, features: int = 2) -> list[ChannelSeries]:
    """Channels whose value at (step, feature) encodes channel, step and feature."""
    return [
        ChannelSeries(
            f"c{i}",
            np.array(
                [[i * 1000 + step + f / 10 for f in range(features)] for step in range(n)],
                dtype=np.float32,
            ).reshape(n, features),
        )
        for i, n in enumerate(lengths)
    ]


# --- interleaving and chunking ------------------------------------------------------------


def test_interleave_advances_all_channels_together_one_step_at_a_time():
    order = [(c.channel, c.seq, len(c.values)) for c in interleave(_series(3, 3, 3))]
    assert order == [(ch, step, 1) for step in range(3) for ch in ("c0", "c1", "c2")]


def test_interleave_drops_channels_that_ran_out_and_keeps_the_others_going():
    order = [(c.channel, c.seq) for c in interleave(_series(2, 4, 1))]
    assert order == [("c0", 0), ("c1", 0), ("c2", 0), ("c0", 1), ("c1", 1), ("c1", 2), ("c1", 3)]


def test_chunks_hold_consecutive_steps_and_the_last_one_is_shorter():
    series = _series(7, 5)
    chunks = list(interleave(series, steps_per_record=3))
    assert [(c.channel, c.seq, len(c.values)) for c in chunks] == [
        ("c0", 0, 3),
        ("c1", 0, 3),
        ("c0", 3, 3),
        ("c1", 3, 2),
        ("c0", 6, 1),
    ]
    for chunk in chunks:
        source = series[int(chunk.channel[1:])].values
        np.testing.assert_array_equal(
            chunk.values, source[chunk.seq : chunk.seq + len(chunk.values)]
        )


def test_every_step_is_sent_exactly_once_whatever_the_chunk_size():
    series = _series(10, 1, 7, 0)
    for k in (1, 2, 3, 10, 11):
        seen = [(c.channel, c.seq + i) for c in interleave(series, k) for i in range(len(c.values))]
        expected = [(s.name, step) for s in series for step in range(len(s.values))]
        assert sorted(seen) == sorted(expected)
        assert len(seen) == len(set(seen))


def test_interleave_rejects_a_chunk_size_below_one():
    with pytest.raises(ValueError, match="steps_per_record"):
        list(interleave(_series(3), steps_per_record=0))


# --- seq, ts, report ----------------------------------------------------------------------


def test_seq_is_the_row_index_and_ts_follows_period():
    sender = ListSender()
    report = stream_series(
        sender, _series(5, 4), steps_per_record=2, period_s=0.5, start_ts=1000.0, progress=False
    )
    assert sender.flushes == 1
    for channel, seq, ts, values, period_s in sender.sent:
        assert ts == 1000.0 + seq * 0.5
        assert period_s == 0.5
        i = int(channel[1:])
        np.testing.assert_array_equal(
            values[:, 0], [i * 1000 + seq + s for s in range(len(values))]
        )
    assert (report.records, report.steps, report.channels) == (3 + 2, 9, 2)
    assert report.seconds >= 0


def test_values_survive_the_wire_exactly_as_float32():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(50, 3)).astype(np.float32) * np.float32(1e3)
    sender = ListSender()
    stream_series(sender, [ChannelSeries("x", values)], steps_per_record=7, progress=False)
    got = np.concatenate([v for *_, v, _ in sender.sent])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, values)


def test_channel_ids_the_daemon_would_refuse_are_refused_before_sending():
    sender = ListSender()
    with pytest.raises(ValueError, match="channel id"):
        stream_series(sender, [ChannelSeries("bad name", np.zeros((2, 1)))], progress=False)
    assert sender.sent == []


def test_start_ts_defaults_to_now():
    sender = ListSender()
    stream_series(sender, _series(1), progress=False)
    _, _, ts, _, _ = sender.sent[0]
    assert abs(ts - time.time()) < 60


def test_report_summary_is_one_line_with_the_rate():
    sender = ListSender()
    report = stream_series(sender, _series(4, 4), progress=False)
    line = report.summary()
    assert "\n" not in line
    assert "8 records" in line and "8 steps" in line and "2 channels" in line


# --- pacing -------------------------------------------------------------------------------


def test_pacer_due_times_follow_period_over_speed():
    clock = FakeClock(start=50.0)
    pacer = StepPacer(period_s=2.0, speed=4.0, clock=clock, sleep=clock.sleep)
    assert pacer.step_interval_s == 0.5
    assert [pacer.due(i) for i in (0, 1, 10)] == [50.0, 50.5, 55.0]


def test_pacer_sleeps_only_until_due_and_not_when_late():
    clock = FakeClock(start=0.0)
    pacer = StepPacer(period_s=1.0, speed=10.0, clock=clock, sleep=clock.sleep)
    pacer.wait_for(0)
    assert clock.sleeps == []
    pacer.wait_for(5)
    assert clock.now == pytest.approx(0.5)
    clock.now = 3.0  # the sender fell behind: no sleeping to catch up backwards
    pacer.wait_for(20)
    assert clock.sleeps == [pytest.approx(0.5)]


def test_pacer_rejects_non_positive_speed():
    with pytest.raises(ValueError, match="speed"):
        StepPacer(period_s=1.0, speed=0.0)


def test_paced_stream_sends_each_record_no_earlier_than_its_last_step_is_due():
    clock = FakeClock(start=0.0)
    send_times: list[tuple[int, int, float]] = []

    class TimedSender(ListSender):
        def send(self, channel, seq, ts, values, period_s):
            send_times.append((seq, len(values), clock.now))

    report = stream_series(
        TimedSender(),
        _series(10, 7),
        steps_per_record=3,
        speed=2.0,
        period_s=1.0,
        progress=False,
        clock=clock,
        sleep=clock.sleep,
    )
    for seq, n, at in send_times:
        due = (seq + n - 1) * 1.0 / 2.0
        assert at >= due - 1e-9
    # Nor later than needed: the clock only moved by sleeping, up to the last step's due time.
    assert clock.now == pytest.approx(9 / 2.0)
    assert report.seconds == pytest.approx(4.5)


def test_unpaced_stream_never_sleeps():
    clock = FakeClock()
    stream_series(ListSender(), _series(50, 50), progress=False, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []


# --- replay from .npy files ---------------------------------------------------------------


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
    for name, (n, f) in {"A-1": (6, 3), "A-10": (4, 3), "A-2": (5, 2)}.items():
        values = np.arange(n * f, dtype=np.float32).reshape(n, f) + float(name.split("-")[1])
        np.save(tmp_path / "test" / f"{name}.npy", values)
        np.save(tmp_path / "train" / f"{name}.npy", values[:2])
    return tmp_path


def test_available_channels_in_natural_order(data_root: Path):
    assert available_channels(data_root) == ["A-1", "A-2", "A-10"]


def test_replay_all_channels_in_bus_order_with_limit(data_root: Path):
    sender = ListSender()
    report = replay(sender, data_root, None, limit_steps=5, start_ts=0.0, progress=False)
    assert [(c, s) for c, s, *_ in sender.sent[:3]] == [("A-1", 0), ("A-2", 0), ("A-10", 0)]
    assert report.steps == 5 + 5 + 4
    assert report.channels == 3
    for channel, seq, _, values, _ in sender.sent:
        source = np.load(data_root / "test" / f"{channel}.npy")
        np.testing.assert_array_equal(values, source[seq : seq + len(values)])


def test_replay_chosen_channels_and_split(data_root: Path):
    sender = ListSender()
    report = replay(sender, data_root, ["A-2"], split="train", steps_per_record=10, progress=False)
    assert (report.records, report.steps, report.channels) == (1, 2, 1)
    assert sender.sent[0][0] == "A-2"


def test_replay_unknown_channel_names_it(data_root: Path):
    with pytest.raises(FileNotFoundError, match="B-7"):
        replay(ListSender(), data_root, ["B-7"], progress=False)


def test_load_channels_rejects_negative_limit(data_root: Path):
    with pytest.raises(ValueError, match="limit_steps"):
        load_channels(data_root, limit_steps=-1)


# --- synthetic ----------------------------------------------------------------------------


def test_synthetic_is_deterministic_in_the_seed():
    a = make_synthetic_channels(3, 600, n_features=3, seed=7)
    b = make_synthetic_channels(3, 600, n_features=3, seed=7)
    c = make_synthetic_channels(3, 600, n_features=3, seed=8)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.train, y.train)
        np.testing.assert_array_equal(x.test, y.test)
        assert (x.anomalies, x.kinds) == (y.anomalies, y.kinds)
    assert not np.array_equal(a[0].test, c[0].test)


def test_synthetic_channel_does_not_depend_on_how_many_are_asked_for():
    few = make_synthetic_channels(2, 500, seed=3)
    many = make_synthetic_channels(5, 500, seed=3)
    np.testing.assert_array_equal(few[1].test, many[1].test)


def test_synthetic_shapes_and_kinds():
    channels = make_synthetic_channels(5, 1000, n_features=4, seed=0, anomalies_per_channel=2)
    assert [c.name for c in channels] == [f"synth-{i:03d}" for i in range(5)]
    for c in channels:
        assert c.train.shape == (1000, 4) and c.test.shape == (1000, 4)
        assert c.train.dtype == np.float32 and c.test.dtype == np.float32
        assert len(c.anomalies) == len(c.kinds) == 2
    assert {k for c in channels for k in c.kinds} == set(ANOMALY_KINDS)


def test_synthetic_anomalies_are_exactly_where_the_truth_says():
    for c in make_synthetic_channels(10, 1500, n_features=2, seed=11, anomalies_per_channel=3):
        inside = np.zeros(len(c.test), dtype=bool)
        for (start, end), kind in zip(c.anomalies, c.kinds, strict=True):
            assert 0 < start <= end < len(c.test)
            assert not inside[start : end + 1].any(), "anomalies overlap"
            inside[start : end + 1] = True
            diff = np.abs(c.test[start : end + 1, 0] - c.clean_test[start : end + 1, 0])
            assert diff.mean() > 0.1 * np.ptp(c.train[:, 0]), (c.name, kind)
            if kind == "flatline":
                assert np.ptp(c.test[start : end + 1, 0]) == 0
        # Outside the truth, and in every covariate column, the test split is the clean signal.
        np.testing.assert_array_equal(c.test[~inside], c.clean_test[~inside])
        np.testing.assert_array_equal(c.test[:, 1:], c.clean_test[:, 1:])


def test_synthetic_anomalies_stand_out_from_the_train_split():
    """A model that learned the train range would notice: spikes and shifts leave it."""
    for c in make_synthetic_channels(10, 1500, seed=5, kinds=["spike", "level_shift"]):
        lo, hi = c.train[:, 0].min(), c.train[:, 0].max()
        for start, end in c.anomalies:
            window = c.test[start : end + 1, 0]
            assert ((window < lo) | (window > hi)).any()


def test_synthetic_train_continues_into_test_without_a_jump():
    for c in make_synthetic_channels(4, 800, seed=2):
        steps = np.abs(np.diff(c.train[:, 0]))
        assert abs(c.clean_test[0, 0] - c.train[-1, 0]) <= steps.max() * 1.5


def test_synthetic_rejects_too_short_a_length():
    with pytest.raises(ValueError, match="too short"):
        make_synthetic_channels(1, 100, anomalies_per_channel=3)


def test_synthetic_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown anomaly kind"):
        make_synthetic_channels(1, 500, kinds=["meteor"])


def test_send_synthetic_streams_the_chosen_split():
    channels = make_synthetic_channels(3, 400, n_features=2, seed=0)
    sender = ListSender()
    report = send_synthetic(sender, channels, split="train", steps_per_record=8, progress=False)
    assert report.steps == 3 * 400
    assert [c for c, *_ in sender.sent[:3]] == [c.name for c in channels]
    got = np.concatenate([v for c, *_, v, _ in sender.sent if c == channels[1].name])
    np.testing.assert_array_equal(got, channels[1].train)


def test_truth_json_matches_the_channels(tmp_path: Path):
    channels = make_synthetic_channels(2, 500, seed=4)
    write_truth(channels, tmp_path / "truth.json")
    rows = json.loads((tmp_path / "truth.json").read_text())
    assert rows == anomaly_truth(channels)
    assert rows[0]["chan_id"] == channels[0].name
    assert rows[0]["anomaly_sequences"] == [list(r) for r in channels[0].anomalies]
    assert rows[0]["num_values"] == 500


def test_written_dataset_replays_like_the_real_one(tmp_path: Path):
    channels = make_synthetic_channels(2, 300, n_features=3, seed=9, anomalies_per_channel=1)
    write_dataset(channels, tmp_path)
    sender = ListSender()
    replay(sender, tmp_path, None, progress=False)
    got = np.concatenate([v for c, *_, v, _ in sender.sent if c == "synth-001"])
    np.testing.assert_array_equal(got, channels[1].test)


# --- CLI ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [replay_command, synthetic_command])
def test_cli_help(command):
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0, result.output
    for option in ("--bootstrap", "--topic", "--steps-per-record", "--speed", "--period-s"):
        assert option in result.output
    assert "SD_KAFKA__BOOTSTRAP_SERVERS" in result.output


def test_replay_cli_needs_channel_or_all(data_root: Path):
    result = CliRunner().invoke(replay_command, ["--data-root", str(data_root)])
    assert result.exit_code == 2
    assert "--channel" in result.output and "--all" in result.output


def test_synthetic_cli_reports_a_too_short_length_before_touching_kafka():
    result = CliRunner().invoke(synthetic_command, ["--length", "50", "--anomalies", "4"])
    assert result.exit_code == 2
    assert "too short" in result.output


# --- sender (KafkaProducer replaced: this checks our bookkeeping, not Kafka) -------------


class FakeKafkaProducer:
    """Completes every future at flush, failing those whose record's seq is in `fail_seqs`."""

    instances: ClassVar[list[FakeKafkaProducer]] = []

    def __init__(self, **config: object) -> None:
        self.config = config
        self.pending: list[tuple[Future, bytes]] = []
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.fail_seqs: set[int] = set()
        self.closed = False
        FakeKafkaProducer.instances.append(self)

    def send(self, topic: str, value: bytes, key: bytes) -> Future:
        future = Future()
        self.sent.append((topic, key, value))
        self.pending.append((future, value))
        return future

    def flush(self, timeout: float | None = None) -> None:
        for future, value in self.pending:
            if json.loads(value)["seq"] in self.fail_seqs:
                future.failure(KafkaTimeoutError("delivery timed out"))
            else:
                future.success(None)
        self.pending.clear()

    def close(self, timeout: float | None = None) -> None:
        self.flush()
        self.closed = True


@pytest.fixture
def fake_producer(monkeypatch: pytest.MonkeyPatch) -> type[FakeKafkaProducer]:
    FakeKafkaProducer.instances.clear()
    monkeypatch.setattr("producers.sender.KafkaProducer", FakeKafkaProducer)
    return FakeKafkaProducer


def test_sender_keys_by_channel_and_waits_for_all_replicas(fake_producer):
    with TelemetrySender("127.0.0.1:1", "telemetry") as sender:
        sender.send("A-1", 0, 10.0, np.zeros((3, 2), dtype=np.float32), 1.0)
        sender.send("P-1", 0, 10.0, np.zeros((1, 2), dtype=np.float32), 1.0)
        sender.flush()
        assert (sender.records_sent, sender.steps_sent, sender.records_acked) == (2, 4, 2)
    producer = fake_producer.instances[0]
    assert producer.closed
    assert producer.config["acks"] == "all"
    assert producer.config["compression_type"] is None
    assert [(t, k) for t, k, _ in producer.sent] == [("telemetry", b"A-1"), ("telemetry", b"P-1")]
    assert parse_telemetry(producer.sent[0][2]).values.shape == (3, 2)


def test_sender_raises_a_failed_delivery_at_flush_and_at_the_next_send(fake_producer):
    sender = TelemetrySender("127.0.0.1:1", "telemetry")
    fake_producer.instances[0].fail_seqs = {1, 2}
    for seq in range(4):
        sender.send("A-1", seq, float(seq), np.zeros((1, 1), dtype=np.float32), 1.0)
    with pytest.raises(TelemetrySendError, match="2 telemetry record") as caught:
        sender.flush()
    assert caught.value.failed == 2
    assert isinstance(caught.value.first_error, KafkaTimeoutError)
    assert (sender.records_acked, sender.records_failed) == (2, 2)
    with pytest.raises(TelemetrySendError):
        sender.send("A-1", 4, 4.0, np.zeros((1, 1), dtype=np.float32), 1.0)


def test_stream_series_surfaces_a_send_failure(fake_producer):
    sender = TelemetrySender("127.0.0.1:1", "telemetry")
    fake_producer.instances[0].fail_seqs = {3}
    with pytest.raises(TelemetrySendError):
        stream_series(sender, _series(5, 5), progress=False)


def test_replay_cli_rejects_an_unknown_channel_before_connecting(data_root: Path):
    result = CliRunner().invoke(
        replay_command,
        ["--data-root", str(data_root), "--channel", "B-7", "--bootstrap", "127.0.0.1:1"],
    )
    assert result.exit_code == 2
    assert "B-7" in result.output
