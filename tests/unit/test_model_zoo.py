"""The non-GAN model zoo: each model learns a synthetic channel and flags injected anomalies.

Every model trains briefly through the real training path (``train_on_series``: scaler,
windows, validation split, ``fit``), is scored through its checkpoint on raw windows as the
daemon scores them (``Checkpoint.score_raw``), and survives a save/load round trip with
identical scores. Model-specific tests pin down what each module's docstring promises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from producers.synthetic import SyntheticChannel, make_synthetic_channels
from stream_detector.data import sliding_windows
from stream_detector.models import FitConfig, build_detector
from stream_detector.models.dense_ae import DenseAutoencoder
from stream_detector.models.hard_sigmoid_lstm import (
    HardSigmoidLSTM,
    _HardSigmoidRecurrence,
    hard_sigmoid,
)
from stream_detector.models.lstm_ae_chapter import (
    ChapterLSTMAutoencoder,
    ChapterLSTMAutoencoderNetwork,
)
from stream_detector.models.lstm_ae_small import (
    ReluLSTM,
    SmallLSTMAutoencoder,
    SmallLSTMAutoencoderNetwork,
)
from stream_detector.models.lstm_dt import LSTMNextValuePredictor
from stream_detector.models.vae import VAENetwork, VariationalAutoencoder
from stream_detector.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from stream_detector.training.trainer import train_on_series

WINDOW = 32


@dataclass(frozen=True)
class ZooCase:
    """How briefly to train one kind, and where its level-shift window ends."""

    kind: str
    epochs: int
    lr: float = 3e-3
    # Fewer training windows for the slow step-by-step ReLU LSTM.
    train_stride: int = 1
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    # Steps of the shift inside the scored window. Reconstruction models see the whole
    # window, so a shift covering its last quarter must show; the predictor scores only
    # its newest step, so its window is the one that predicts the first shifted value.
    shift_steps_in_window: int = WINDOW // 4


CASES = [
    ZooCase("lstm_ae_small", epochs=20, train_stride=2),
    ZooCase("dense_ae", epochs=10),
    ZooCase("vae", epochs=30),
    ZooCase("lstm_ae_chapter", epochs=10),
    ZooCase("lstm_dt", epochs=10, shift_steps_in_window=1),
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def channel() -> SyntheticChannel:
    """A seeded sine-like channel: anomaly-free train, test with a spike and a level shift."""
    return make_synthetic_channels(
        n_channels=1,
        length=1200,
        train_length=1000,
        n_features=1,
        seed=0,
        kinds=("spike", "level_shift"),
    )[0]


@pytest.fixture(scope="module", params=CASES, ids=lambda case: case.kind)
def trained(
    request: pytest.FixtureRequest, channel: SyntheticChannel
) -> tuple[ZooCase, Checkpoint]:
    case: ZooCase = request.param
    checkpoint = train_on_series(
        case.kind,
        [channel.train],
        window=WINDOW,
        channels=[channel.name],
        dataset="synthetic",
        train_stride=case.train_stride,
        hyperparameters=case.hyperparameters,
        fit_config=FitConfig(epochs=case.epochs, lr=case.lr, device="cpu", seed=0),
        progress=False,
    )
    return case, checkpoint


def _window_ending_at(step: int) -> int:
    """Index, in ``sliding_windows`` order, of the window whose newest step is ``step``."""
    return step - WINDOW + 1


# --- every zoo model ---------------------------------------------------------------------


def test_injected_anomalies_score_above_every_normal_window(
    trained: tuple[ZooCase, Checkpoint], channel: SyntheticChannel
) -> None:
    """The spike's and the level shift's windows score above the highest anomaly-free window."""
    case, checkpoint = trained
    assert channel.kinds == ["spike", "level_shift"]
    (_, spike_end), (shift_start, _) = channel.anomalies
    normal = checkpoint.score_raw(np.array(sliding_windows(channel.clean_test, WINDOW)))
    scores = checkpoint.score_raw(np.array(sliding_windows(channel.test, WINDOW)))
    ceiling = float(normal.max())
    assert ceiling >= float(np.quantile(normal, 0.99))
    spike = float(scores[_window_ending_at(spike_end)])
    shift = float(scores[_window_ending_at(shift_start + case.shift_steps_in_window - 1)])
    assert spike > ceiling, f"{case.kind}: spike {spike:.4g} <= normal max {ceiling:.4g}"
    assert shift > ceiling, f"{case.kind}: shift {shift:.4g} <= normal max {ceiling:.4g}"


def test_checkpoint_round_trip_gives_identical_scores(
    trained: tuple[ZooCase, Checkpoint], channel: SyntheticChannel, tmp_path: Path
) -> None:
    """save_checkpoint -> load_checkpoint rebuilds the same model: same version, same scores."""
    case, checkpoint = trained
    path = save_checkpoint(checkpoint, tmp_path / f"{case.kind}.pt")
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.detector.kind == case.kind
    assert loaded.detector.hyperparameters == checkpoint.detector.hyperparameters
    assert loaded.model_version == checkpoint.model_version
    windows = np.array(sliding_windows(channel.test, WINDOW))
    np.testing.assert_array_equal(loaded.score_raw(windows), checkpoint.score_raw(windows))


def test_batch_scores_match_one_by_one_scores(
    trained: tuple[ZooCase, Checkpoint], channel: SyntheticChannel
) -> None:
    """With the shipped defaults too, a batch scores as its windows alone (float rounding)."""
    _, checkpoint = trained
    windows = np.array(sliding_windows(channel.test[:80], WINDOW))
    batch = checkpoint.score_raw(windows)
    single = np.concatenate([checkpoint.score_raw(windows[i : i + 1]) for i in range(len(windows))])
    # A predictor's score is one absolute difference, which can be tiny: allow rounding.
    np.testing.assert_allclose(batch, single, rtol=1e-5, atol=1e-6)


# --- lstm_ae_small ------------------------------------------------------------------------


def test_relu_lstm_follows_the_keras_relu_lstm_equations() -> None:
    """g = relu(.), c = σ(f)·c + σ(i)·g, h = σ(o)·relu(c); gates ordered i, f, g, o."""
    torch.manual_seed(0)
    layer = ReluLSTM(input_size=2, hidden_size=3)
    x = torch.randn(2, 5, 2)
    with torch.no_grad():
        got = layer(x).numpy()
    w, u, b = (p.detach().numpy() for p in (layer.input_kernel, layer.recurrent_kernel, layer.bias))

    def sigmoid(v: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-v))

    h = np.zeros((2, 3), np.float32)
    c = np.zeros((2, 3), np.float32)
    for step in range(5):
        gates = x[:, step].numpy() @ w + h @ u + b
        i, f, g, o = np.split(gates, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.maximum(g, 0)
        h = sigmoid(o) * np.maximum(c, 0)
        np.testing.assert_allclose(got[:, step], h, rtol=1e-5, atol=1e-6)
    # Keras' unit_forget_bias.
    np.testing.assert_array_equal(b[3:6], 1.0)


def test_lstm_ae_small_adds_the_l2_term_to_training_batches_only() -> None:
    """Train loss = MSE + l2·ΣW² over the first input kernel; the val loss is the plain MSE."""
    detector = build_detector("lstm_ae_small", 10, 2, l2=0.5)
    assert isinstance(detector, SmallLSTMAutoencoder)
    network = detector.network
    assert isinstance(network, SmallLSTMAutoencoderNetwork)
    batch = torch.randn(4, 10, 2)
    network.train()
    with torch.no_grad():
        train_loss = float(detector._batch_loss(network, batch))
        network.eval()
        val_loss = float(detector._batch_loss(network, batch))
        penalty = float(torch.sum(network.encoder_outer.input_kernel**2))
    assert train_loss - val_loss == pytest.approx(0.5 * penalty, rel=1e-5)
    assert val_loss == pytest.approx(float(detector.score(batch.numpy()).mean()), rel=1e-5)


# --- dense_ae -----------------------------------------------------------------------------


def test_dense_ae_mirrors_its_encoder_on_the_flattened_window() -> None:
    """(T·F) -> 128 -> 64 -> 32 -> 64 -> 128 -> (T·F), ReLU everywhere but the output."""
    detector = build_detector("dense_ae", 10, 3)
    assert isinstance(detector, DenseAutoencoder)
    linears = [m for m in detector.network.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (30, 128),
        (128, 64),
        (64, 32),
        (32, 64),
        (64, 128),
        (128, 30),
    ]
    assert not isinstance(list(detector.network.modules())[-1], torch.nn.ReLU)


# --- lstm_ae_chapter ----------------------------------------------------------------------


def test_lstm_ae_chapter_latent_sets_the_decoder_state_as_well_as_its_input() -> None:
    """Unlike lstm_ae, the decoder starts from Linear(z): changing that map changes the output."""
    torch.manual_seed(0)
    detector = build_detector("lstm_ae_chapter", 8, 2, hidden=6, num_layers=2, latent=3)
    assert isinstance(detector, ChapterLSTMAutoencoder)
    network = detector.network
    assert isinstance(network, ChapterLSTMAutoencoderNetwork)
    assert network.encoder_lstm.num_layers == network.decoder_lstm.num_layers == 2
    assert network.decoder_lstm.input_size == 3
    windows = np.random.default_rng(2).standard_normal((3, 8, 2)).astype(np.float32)
    before = detector.score(windows)
    with torch.no_grad():
        network.latent_to_state.bias.add_(1.0)
    assert not np.allclose(detector.score(windows), before)


# --- vae ----------------------------------------------------------------------------------


def test_vae_score_is_the_decoded_mean_error_plus_weighted_kl() -> None:
    """score = MSE of decode(μ) + β·KL/(T·F): no sampling when scoring, so it is repeatable."""
    torch.manual_seed(0)
    detector = build_detector("vae", 6, 2, hidden=[8], latent=3, beta=2.0)
    assert isinstance(detector, VariationalAutoencoder)
    network = detector.network
    assert isinstance(network, VAENetwork)
    windows = np.random.default_rng(0).standard_normal((5, 6, 2)).astype(np.float32)
    network.eval()
    with torch.no_grad():
        x = torch.from_numpy(windows)
        mu, logvar = network.encode(x)
        reconstruction = network.decode(mu, 6, 2)
        kl = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=1)
        expected = ((reconstruction - x) ** 2).mean(dim=(1, 2)) + 2.0 * kl / 12
    np.testing.assert_allclose(detector.score(windows), expected.numpy(), rtol=1e-5)
    np.testing.assert_array_equal(detector.score(windows), detector.score(windows))
    # Training, by contrast, decodes a sample: two passes differ.
    network.train()
    with torch.no_grad():
        assert not torch.equal(network(x), network(x))


# --- lstm_dt ------------------------------------------------------------------------------


def test_lstm_dt_scores_telemanoms_first_prediction_of_the_newest_step() -> None:
    """History = the W−n steps before the newest; score = |ŷ − y| of the one-step-ahead output."""
    torch.manual_seed(0)
    detector = build_detector(
        "lstm_dt", 12, 3, hidden=[5, 4], n_predictions=3, score_features=[0, 2]
    )
    assert isinstance(detector, LSTMNextValuePredictor)
    assert detector.scored_prediction == "first"
    windows = np.random.default_rng(1).standard_normal((4, 12, 3)).astype(np.float32)
    detector.network.eval()
    with torch.no_grad():
        # 9 steps of history (W − n), the ones just before the newest step 11.
        predicted = detector.network(torch.from_numpy(windows[:, 2:11])).numpy()
    expected = np.abs(predicted[:, 0, :] - windows[:, 11, [0, 2]]).mean(axis=1)
    np.testing.assert_allclose(detector.score(windows), expected, rtol=1e-5)
    # The oldest n − 1 steps are not looked at; the newest value is.
    changed = windows.copy()
    changed[:, :2, :] += 5.0
    np.testing.assert_array_equal(detector.score(changed), detector.score(windows))
    changed[:, -1, 0] += 5.0
    assert np.all(detector.score(changed) > detector.score(windows))
    # With one prediction "first" and "mean" are the same score.
    one = build_detector("lstm_dt", 12, 3, hidden=[5, 4])
    assert isinstance(one, LSTMNextValuePredictor)
    as_mean = build_detector("lstm_dt", 12, 3, hidden=[5, 4], scored_prediction="mean")
    as_mean.load_state_dict(one.state_dict())
    np.testing.assert_array_equal(one.score(windows), as_mean.score(windows))


def test_lstm_dt_mean_scores_the_absolute_error_of_all_predicted_steps() -> None:
    """History = first W−n steps of all columns; score = mean |ŷ − y| over the last n steps."""
    torch.manual_seed(0)
    detector = build_detector(
        "lstm_dt",
        12,
        3,
        hidden=[5, 4],
        n_predictions=3,
        score_features=[0, 2],
        scored_prediction="mean",
    )
    assert isinstance(detector, LSTMNextValuePredictor)
    windows = np.random.default_rng(1).standard_normal((4, 12, 3)).astype(np.float32)
    detector.network.eval()
    with torch.no_grad():
        x = torch.from_numpy(windows)
        predicted = detector.network(x[:, :9]).numpy()
    assert predicted.shape == (4, 3, 2)
    expected = np.abs(predicted - windows[:, 9:, [0, 2]]).mean(axis=(1, 2))
    np.testing.assert_allclose(detector.score(windows), expected, rtol=1e-5)
    # Changing a predicted step of a column it does not predict changes nothing.
    changed = windows.copy()
    changed[:, -1, 1] += 5.0
    np.testing.assert_array_equal(detector.score(changed), detector.score(windows))


def test_lstm_dt_defaults_are_telemanoms_and_its_geometry_is_checked() -> None:
    """2 × 80 LSTM units, dropout 0.3, column 0; window 260 with 10 predictions = l_s 250."""
    detector = build_detector("lstm_dt", 260, 25, n_predictions=10)
    assert isinstance(detector, LSTMNextValuePredictor)
    assert detector.hyperparameters == {
        "hidden": [80, 80],
        "dropout": 0.3,
        "n_predictions": 10,
        "loss": "squared",
        "score_features": [0],
        "scored_prediction": "first",
    }
    with pytest.raises(ValueError, match="scored_prediction"):
        build_detector("lstm_dt", 10, 2, scored_prediction="last")
    with pytest.raises(ValueError, match="n_predictions"):
        build_detector("lstm_dt", 10, 2, n_predictions=10)
    with pytest.raises(ValueError, match="score_features"):
        build_detector("lstm_dt", 10, 2, score_features=[2])
    with pytest.raises(ValueError, match="loss"):
        build_detector("lstm_dt", 10, 2, loss="huber")


def test_lstm_dt_keras_init_starts_as_telemanoms_keras_network() -> None:
    """Orthogonal recurrent kernels, Glorot-bounded input kernels, biases 0 but forget 1."""
    torch.manual_seed(0)
    detector = build_detector("lstm_dt", 30, 3, hidden=[8, 6], init="keras")
    assert detector.hyperparameters["init"] == "keras"
    for lstm in detector.network.lstms:
        units, inputs = lstm.hidden_size, lstm.input_size
        recurrent = lstm.weight_hh_l0.detach()  # (4·units, units)
        assert torch.allclose(recurrent.T @ recurrent, torch.eye(units), atol=1e-5)
        limit = (6 / (inputs + 4 * units)) ** 0.5
        assert lstm.weight_ih_l0.abs().max() <= limit
        bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach()
        assert torch.equal(bias[units : 2 * units], torch.ones(units))  # the forget gate
        assert not bias[:units].any() and not bias[2 * units :].any()
    head = detector.network.head
    assert not head.bias.any() and head.weight.abs().max() <= (6 / (6 + 1)) ** 0.5
    # torch's default is left alone and not written (older score caches stay keyed alike).
    torch.manual_seed(0)
    default = build_detector("lstm_dt", 30, 3, hidden=[8, 6])
    assert "init" not in default.hyperparameters
    assert default.network.lstms[0].bias_ih_l0.abs().min() > 0
    with pytest.raises(ValueError, match="init"):
        build_detector("lstm_dt", 30, 3, init="xavier")


def test_hard_sigmoid_is_keras_2_1s() -> None:
    x = torch.tensor([-3.0, -2.5, -1.0, 0.0, 1.0, 2.5, 3.0])
    assert torch.allclose(hard_sigmoid(x), torch.tensor([0.0, 0.0, 0.3, 0.5, 0.7, 1.0, 1.0]))


def _lstm_by_the_equations(layer: Any, sequence: torch.Tensor, gate: Any) -> torch.Tensor:
    """The LSTM equations step by step, with autograd: the reference for the layer."""
    batch, steps, _ = sequence.shape
    h = sequence.new_zeros(batch, layer.hidden_size)
    c = sequence.new_zeros(batch, layer.hidden_size)
    outputs = []
    for step in range(steps):
        a = sequence[:, step] @ layer.weight_ih_l0.T + layer.bias_ih_l0
        a = a + h @ layer.weight_hh_l0.T + layer.bias_hh_l0
        i, f, g, o = a.chunk(4, dim=1)
        c = gate(f) * c + gate(i) * torch.tanh(g)
        h = gate(o) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def test_hard_sigmoid_lstm_follows_the_equations_and_torchs_conventions() -> None:
    """The reference computes nn.LSTM's outputs from the same state dict when its gate is
    the sigmoid (so the names, gate order and biases are torch's); the layer computes the
    reference's outputs and gradients with Keras' gate."""
    torch.manual_seed(0)
    layer = HardSigmoidLSTM(5, 7)
    fused = torch.nn.LSTM(5, 7, batch_first=True)
    fused.load_state_dict(layer.state_dict(), strict=True)
    sequence = torch.randn(4, 9, 5)
    by_hand = _lstm_by_the_equations(layer, sequence, torch.sigmoid)
    assert torch.allclose(by_hand, fused(sequence)[0], atol=1e-6)

    expected = _lstm_by_the_equations(layer, sequence, hard_sigmoid)
    got, last = layer(sequence)
    assert torch.allclose(got, expected, atol=1e-6) and torch.equal(last, got[:, -1])
    assert not torch.allclose(got, by_hand, atol=1e-3)
    parameters = list(layer.parameters())
    ours = torch.autograd.grad((got**2).sum(), parameters)
    reference = torch.autograd.grad((expected**2).sum(), parameters)
    for mine, theirs in zip(ours, reference, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-5) and mine.abs().sum() > 0


def test_hard_sigmoid_recurrence_backward_matches_finite_differences() -> None:
    torch.manual_seed(1)
    # Gate inputs spread over ±4 so that some fall in each of hard_sigmoid's three pieces.
    inputs = (torch.randn(6, 3, 8, dtype=torch.float64) * 2).requires_grad_()
    weight = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_HardSigmoidRecurrence.apply, (inputs, weight))


def test_lstm_dt_hard_sigmoid_gate_is_written_trained_and_reloaded() -> None:
    torch.manual_seed(0)
    detector = build_detector(
        "lstm_dt",
        12,
        2,
        hidden=[6, 5],
        n_predictions=2,
        init="keras",
        recurrent_gate="hard_sigmoid",
    )
    assert detector.hyperparameters["recurrent_gate"] == "hard_sigmoid"
    assert all(type(lstm).__name__ == "HardSigmoidLSTM" for lstm in detector.network.lstms)
    # Keras' start applies to the looped layer as to the fused one.
    bias = detector.network.lstms[0].bias_ih_l0.detach()
    assert torch.equal(bias[6:12], torch.ones(6))
    rng = np.random.default_rng(0)
    windows = sliding_windows(rng.normal(size=(80, 2)).astype(np.float32), 12)
    history = detector.fit(windows[:50], windows[50:], FitConfig(epochs=2, device="cpu"), False)
    assert len(history.train_loss) == 2
    twin = build_detector("lstm_dt", 12, 2, **detector.hyperparameters)
    twin.load_state_dict(detector.state_dict())
    assert np.array_equal(twin.score(windows), detector.score(windows))
    assert "recurrent_gate" not in build_detector("lstm_dt", 12, 2).hyperparameters
    with pytest.raises(ValueError, match="recurrent_gate"):
        build_detector("lstm_dt", 12, 2, recurrent_gate="relu")
