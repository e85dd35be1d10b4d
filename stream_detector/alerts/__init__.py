"""Anomaly episodes: from per-window decisions to open / update / resolve events."""
