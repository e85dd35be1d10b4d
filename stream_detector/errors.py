"""Exception types that carry their reason, so it reaches the log and the dead-letter topic."""

from __future__ import annotations


class StreamDetectorError(Exception):
    """Base class of every error this package raises on purpose."""


class BadRecord(StreamDetectorError):
    """A telemetry record that cannot be scored; `reason` is a stable snake_case code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class ConfigError(StreamDetectorError):
    """A setting that makes start-up impossible; `setting` names it."""

    def __init__(self, setting: str, detail: str) -> None:
        self.setting = setting
        self.detail = detail
        super().__init__(f"invalid setting {setting}: {detail}")


class CheckpointError(StreamDetectorError):
    """A model checkpoint that is missing, corrupt or incompatible with the settings."""
