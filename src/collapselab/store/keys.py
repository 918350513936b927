"""Stage keys: a hash of everything that decides a stage's content.

The key covers the stage's kind, its settings, the keys of the stages it reads and a per-kind
code-version constant — never thread counts, batch sizes or paths of the run folder — so the same
experiment always maps to the same folders and changing one setting re-runs only what depends on it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def stage_key(kind: str, code_version: int, settings: dict[str, Any], input_keys: list[str]) -> str:
    """A 12-hex-digit key for a stage (48 bits: collisions are not a concern at grid sizes)."""
    payload = canonical_json(
        {"kind": kind, "code_version": code_version, "settings": settings, "inputs": sorted(input_keys)}
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]
