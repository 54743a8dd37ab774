"""The migration's checkpoint: where each SCAN stands, and the counters up to there.

Batches are committed in the order they were scanned, each once the target has confirmed it;
the file is written atomically (temporary file, fsync, rename) at most every
:data:`SAVE_INTERVAL` seconds, and always when the run ends or stops on an error. A run killed
at any moment therefore resumes from a cursor whose keys are all on the target; the batches
done since the last write are merged again, which the event-time rule makes harmless. (Saving
after every batch cost an fsync per batch: a third of the run's time on a fast pair of
servers.) It names servers by address only, never a password.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Seconds between two writes of the checkpoint file while a run goes on.
SAVE_INTERVAL = 1.0


@dataclass
class Checkpoint:
    """``streams``: ``"<node>|<project>"`` -> {"cursor": int, "done": bool}."""

    path: Path
    identity: dict[str, Any]
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    saved_at: float = 0.0  # time.monotonic() of the last write
    unsaved: bool = False  # committed batches the file does not hold yet

    def cursor(self, stream: str) -> int | None:
        """Where to continue this stream; None when it is finished."""
        state = self.streams.get(stream, {"cursor": 0, "done": False})
        return None if state["done"] else int(state["cursor"])

    def advance(self, stream: str, cursor: int, counters: dict[str, int]) -> None:
        """Commit one batch; the file follows when :data:`SAVE_INTERVAL` has passed."""
        self.streams[stream] = {"cursor": cursor, "done": cursor == 0}
        for name, value in counters.items():
            self.counters[name] = self.counters.get(name, 0) + value
        self.unsaved = True
        if time.monotonic() - self.saved_at >= SAVE_INTERVAL:
            self.save()

    def flush(self) -> None:
        """Write what was committed since the last write (at the end, or when stopping)."""
        if self.unsaved:
            self.save()

    def save(self) -> None:
        data = {"identity": self.identity, "streams": self.streams, "counters": self.counters}
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
            self.saved_at = time.monotonic()
            self.unsaved = False
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def load(path: Path, identity: dict[str, Any]) -> Checkpoint | None:
    """The checkpoint at ``path`` if it belongs to this migration (same source, target,
    projects); None when there is none. A checkpoint of another migration is an error."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"the checkpoint {path} is unreadable ({exc}); delete it") from None
    if data.get("identity") != identity:
        raise ValueError(
            f"the checkpoint {path} belongs to another migration (source, target or projects "
            "differ, or the cluster's masters changed); run without --resume to start over"
        )
    return Checkpoint(path, identity, dict(data["streams"]), dict(data["counters"]))
