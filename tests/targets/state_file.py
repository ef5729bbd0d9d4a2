"""A PipelineWise-like runner: the tap's `--state` file is rewritten with every STATE line the target prints.

PipelineWise starts the tap with `--state <file>` and, while the pipeline runs, writes the target's
last emitted STATE into that same file; the tap reads it again during a LOG_BASED WAL pass to learn
what the target has saved. `StateFilePipeline` does the same: the file is replaced atomically (a temp
file, then os.replace), so a reader sees either the old or the new state, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from targets.pipeline import Pipeline


def write_atomically(path: Path, content) -> None:
    """Replace `path` with `content` as JSON, as one step for any reader."""
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(content))
    os.replace(temp, path)


def lowest_lsn(state, stream_ids) -> int | None:
    """The lowest `lsn` a state holds for these streams, or None when one of them has none."""
    bookmarks = (state or {}).get("bookmarks", {})
    positions = [bookmarks.get(stream_id, {}).get("lsn") for stream_id in stream_ids]
    if not positions or any(not isinstance(position, int) for position in positions):
        return None
    return min(positions)


class StateFilePipeline(Pipeline):
    """tap | target with `--state workdir/state.json`, that file rewritten each time the target saves a STATE.

    `state` is the file's first content: `{}` for a first run (PipelineWise would pass no file; the
    tap reads `{}` as no bookmarks). `saved_state()` reads the file back, as a rerun would.
    """

    def __init__(self, workdir: Path, target: str, tap_config: dict, catalog: dict, state, target_config: dict):
        super().__init__(workdir, target, tap_config, catalog, state if state is not None else {}, target_config)

    @property
    def state_path(self) -> Path:
        return self.workdir / "state.json"

    def saved_state(self) -> dict:
        return json.loads(self.state_path.read_text())

    def _read_states(self) -> None:
        for line in self.target_process.stdout:
            if not line.endswith(b"\n"):
                break  # a line cut by a kill was never saved
            try:
                state = json.loads(line)
            except ValueError:
                continue  # not a state (a target's stray print)
            write_atomically(self.state_path, state)
            self.states.append(state)
