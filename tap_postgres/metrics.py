"""singer-sdk's METRIC log lines: `record_count` counters and `sync_duration` timers, tagged with the stream
and its replication method, on the `singer_sdk.metrics` logger, as singer-sdk taps write them."""

from __future__ import annotations

import json
import logging
import time

LOGGER = logging.getLogger("singer_sdk.metrics")
LOG_INTERVAL = 60.0  # singer-sdk's: a counter line at most once a minute, and one at the end
_METHODS: dict[str, str] = {"LOG_BASED": "LOG_BASED"}  # the LOG_BASED pass counts all its streams' changes


def register_streams(streams) -> None:
    """Remember each stream's replication method, the tag of its metrics."""
    _METHODS.update({stream.tap_stream_id: stream.replication_method for stream in streams})


def log_point(kind: str, metric: str, value: float, tags: dict) -> None:
    """Write one METRIC line."""
    LOGGER.info(
        "METRIC: %s", json.dumps({"type": kind, "metric": metric, "value": value, "tags": tags}, separators=(",", ":"))
    )


class StreamMetrics:
    """A stream's record counter (the records since its last line) and its sync timer."""

    def __init__(self, stream_id: str, interval: float = LOG_INTERVAL):
        self.tags = {"stream": stream_id, "replication_method": _METHODS.get(stream_id)}
        self.interval = interval
        self.count = 0
        self.started = self._last_line = time.monotonic()

    def add(self, records: int) -> None:
        """Count records; write the counter when the last line is `interval` old."""
        self.count += records
        if time.monotonic() - self._last_line >= self.interval:
            self._write_count()

    def finish(self) -> None:
        """Write the last count and the stream's sync_duration."""
        self._write_count()
        log_point(
            "timer", "sync_duration", round(time.monotonic() - self.started, 6), {**self.tags, "status": "succeeded"}
        )

    def _write_count(self) -> None:
        log_point("counter", "record_count", self.count, self.tags)
        self.count = 0
        self._last_line = time.monotonic()
