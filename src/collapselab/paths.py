"""Where collapselab keeps what it caches between runs (converted models, wheels, the offline
corpus, HTTP responses): one root, ``$COLLAPSELAB_CACHE`` or ``~/.cache/collapselab``."""

from __future__ import annotations

import os
from pathlib import Path

#: The environment variable that moves the cache.
ENV_CACHE = "COLLAPSELAB_CACHE"


def cache_root() -> Path:
    """``$COLLAPSELAB_CACHE`` or ``~/.cache/collapselab`` (created on demand by the writers)."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "collapselab"
