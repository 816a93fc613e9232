"""One cache of measurements: a checkpoint's numbers, reused while file and settings match.

A measurement is keyed by what is measured (``profile``, ``matched_lambda_1``, ...), the
checkpoint's SHA-256 and a canonical JSON of the settings (sorted keys, tuples as lists).
It is stored as one JSON file beside the checkpoint, named by what and a digest of the
settings, so a retrained checkpoint (another hash) is measured again, other settings get
their own file, and a killed run keeps every finished measurement. The reproduce runner
and the sweep both measure through :func:`measured`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distill.checkpoint import file_sha256
from landscape.atomic_files import write_text_atomically


@dataclass(frozen=True)
class Measurement:
    """One measurement of one checkpoint, with the key it was stored under.

    Attributes:
        what: What was measured (``profile``, ``matched_lambda_1``, ...).
        checkpoint_sha256: SHA-256 of the checkpoint file measured.
        settings: The settings, as canonical JSON values.
        values: The numbers (a JSON object).
    """

    what: str
    checkpoint_sha256: str
    settings: dict[str, Any]
    values: dict[str, Any]

    @property
    def key(self) -> tuple[str, str, str]:
        """``(what, checkpoint SHA-256, canonical settings JSON)``: equal keys, equal numbers."""
        return self.what, self.checkpoint_sha256, canonical_json(self.settings)


def canonical_json(settings: dict[str, Any]) -> str:
    """The settings as one canonical JSON text: sorted keys, no spaces, tuples as lists."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)


def cache_file(checkpoint: str | Path, what: str, settings: dict[str, Any]) -> Path:
    """Where the measurement ``what`` with ``settings`` of ``checkpoint`` is stored."""
    checkpoint = Path(checkpoint)
    digest = hashlib.sha256(canonical_json(settings).encode()).hexdigest()[:16]
    return checkpoint.with_name(f"{checkpoint.stem}.{what}-{digest}.json")


def measured(
    checkpoint: str | Path,
    what: str,
    settings: dict[str, Any],
    measure: Callable[[], dict[str, Any]],
) -> Measurement:
    """The stored measurement when the file's hash and the settings match, else ``measure()``.

    Args:
        checkpoint: The checkpoint file measured.
        what: What is measured (part of the key and of the cache file's name).
        settings: Everything the numbers depend on besides the file (JSON values).
        measure: Computes the numbers (a JSON object) on a miss; they are then stored.

    Returns:
        The measurement, read back or made now.
    """
    sha = file_sha256(checkpoint)
    wanted = Measurement(what, sha, json.loads(canonical_json(settings)), {})
    path = cache_file(checkpoint, what, settings)
    stored = _read(path)
    if stored is not None and Measurement(**{**stored, "values": {}}).key == wanted.key:
        return Measurement(**stored)
    found = Measurement(what, sha, wanted.settings, measure())
    write_text_atomically(path, json.dumps(asdict(found), default=str))
    return found


def _read(path: Path) -> dict[str, Any] | None:
    """A stored measurement's fields, or None when absent, unreadable or of another shape."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    fields = {"what", "checkpoint_sha256", "settings", "values"}
    if not isinstance(stored, dict) or set(stored) != fields:
        return None
    return stored
