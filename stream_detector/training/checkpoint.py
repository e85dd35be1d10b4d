"""One checkpoint file holding everything the daemon needs to score a channel.

The file is ``torch.save`` of a plain dict: the detector's weights under ``state_dict``
and everything else as JSON-able primitives under ``meta``. That keeps ``torch.load``
in ``weights_only`` mode, which cannot run code from a tampered file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from stream_detector import __version__
from stream_detector.errors import CheckpointError
from stream_detector.models import Detector, get_detector_class, resolve_device
from stream_detector.thresholds.base import PRIOR_QUANTILES
from stream_detector.training.scaler import StandardScaler

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "Calibration",
    "Checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "stream-detector-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


@dataclass
class Calibration:
    """Summary of the model's scores on its own training windows, to seed thresholds."""

    n: int
    mean: float
    std: float
    # p50, p90, p95, p99, p99.9 and max.
    quantiles: dict[str, float] = field(default_factory=dict)
    # The scores of the last training windows at stride 1, in stream order (held-out
    # data): a threshold that judges a score against its recent history (telemanom's)
    # starts from them instead of from an empty window.
    tail: list[float] = field(default_factory=list)

    @classmethod
    def from_scores(cls, scores: np.ndarray, tail: np.ndarray | None = None) -> Self:
        values = np.asarray(scores, dtype=np.float64).ravel()
        if values.size == 0:
            raise ValueError("cannot calibrate on zero scores")
        quantiles = {name: float(np.quantile(values, q)) for name, q in PRIOR_QUANTILES.items()}
        quantiles["max"] = float(values.max())
        return cls(
            n=int(values.size),
            mean=float(values.mean()),
            std=float(values.std()),
            quantiles=quantiles,
            tail=[] if tail is None else [float(x) for x in np.asarray(tail).ravel()],
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(
            n=int(data["n"]),
            mean=float(data["mean"]),
            std=float(data["std"]),
            quantiles={str(k): float(v) for k, v in data["quantiles"].items()},
            tail=[float(x) for x in data.get("tail", [])],
        )


@dataclass
class Checkpoint:
    """A trained detector with the scaler, calibration and provenance that go with it."""

    detector: Detector
    scaler: StandardScaler
    calibration: Calibration
    window: int
    # Steps between consecutive windows the daemon scores.
    stride: int
    n_features: int
    channels: list[str]
    dataset: str
    # History summary and the FitConfig used; JSON-able.
    fit: dict[str, Any]
    created_at: float
    package_version: str = __version__

    def __post_init__(self) -> None:
        if (self.detector.window, self.detector.n_features) != (self.window, self.n_features):
            raise ValueError(
                f"detector is for windows ({self.detector.window}, {self.detector.n_features}) "
                f"but the checkpoint says ({self.window}, {self.n_features})"
            )
        if self.scaler.n_features != self.n_features:
            raise ValueError(
                f"scaler has {self.scaler.n_features} features, checkpoint {self.n_features}"
            )

    @property
    def model_version(self) -> str:
        """Short sha256 of what decides the scores: kind, shapes, hyperparameters, scaler, weights.

        The same on every device and after a save/load round trip; it changes with any
        retraining.
        """
        digest = hashlib.sha256()
        header = {
            "kind": self.detector.kind,
            "window": self.window,
            "n_features": self.n_features,
            "hyperparameters": self.detector.hyperparameters,
            "scaler": self.scaler.to_dict(),
        }
        digest.update(json.dumps(header, sort_keys=True).encode())
        for name, tensor in sorted(self.detector.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:12]

    def score_raw(self, windows_raw: np.ndarray) -> np.ndarray:
        """Scores (B,) of windows (B, window, n_features) in original units: scale, then score."""
        return self.detector.score(self.scaler.transform(windows_raw))

    def meta(self) -> dict[str, Any]:
        """Everything but the weights, as JSON-able primitives."""
        return {
            "detector": {
                "kind": self.detector.kind,
                "hyperparameters": self.detector.hyperparameters,
            },
            "scaler": self.scaler.to_dict(),
            "calibration": self.calibration.to_dict(),
            "window": self.window,
            "stride": self.stride,
            "n_features": self.n_features,
            "channels": list(self.channels),
            "dataset": self.dataset,
            "fit": self.fit,
            "created_at": self.created_at,
            "package_version": self.package_version,
        }


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (a reader never sees half a file)."""
    target = Path(path)
    meta = checkpoint.meta()
    try:
        # Round-trip through JSON: what survives is exactly what weights_only can load.
        meta = json.loads(json.dumps(meta, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint metadata is not JSON-able: {exc}") from exc
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "state_dict": {
            name: tensor.detach().cpu().contiguous()
            for name, tensor in checkpoint.detector.state_dict().items()
        },
        "meta": meta,
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def _read_payload(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean "unreadable"
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a stream-detector checkpoint")
    version = payload.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; "
            f"this build reads version {CHECKPOINT_FORMAT_VERSION}"
        )
    return payload


def load_checkpoint(path: str | Path, device: str | torch.device = "auto") -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``, with the detector on ``device``.

    ``device="auto"`` means CUDA when available, else the CPU. Every failure, from a
    missing file to an unknown model kind, raises CheckpointError saying what is wrong.
    """
    source = Path(path)
    payload = _read_payload(source)
    try:
        meta = payload["meta"]
        kind = meta["detector"]["kind"]
        try:
            detector_class = get_detector_class(kind)
        except KeyError as exc:
            raise CheckpointError(f"{source}: {exc.args[0]}") from None
        detector = detector_class(
            int(meta["window"]), int(meta["n_features"]), **meta["detector"]["hyperparameters"]
        )
        detector.load_state_dict(payload["state_dict"])
        checkpoint = Checkpoint(
            detector=detector,
            scaler=StandardScaler.from_dict(meta["scaler"]),
            calibration=Calibration.from_dict(meta["calibration"]),
            window=int(meta["window"]),
            stride=int(meta["stride"]),
            n_features=int(meta["n_features"]),
            channels=[str(c) for c in meta["channels"]],
            dataset=str(meta["dataset"]),
            fit=dict(meta["fit"]),
            created_at=float(meta["created_at"]),
            package_version=str(meta["package_version"]),
        )
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        # Missing fields, bad hyperparameters, or weights that do not fit the network.
        raise CheckpointError(f"{source} is incomplete or inconsistent: {exc}") from exc
    # Outside the try: a device that does not exist is a settings problem, not a file problem.
    checkpoint.detector.to(resolve_device(device))
    return checkpoint
