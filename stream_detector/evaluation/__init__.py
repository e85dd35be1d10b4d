"""Scoring detectors against labelled anomalies, the way a careful reviewer would."""
