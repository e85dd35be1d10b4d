"""stream-detector: streaming anomaly detection for spacecraft-style telemetry."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stream-detector")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
