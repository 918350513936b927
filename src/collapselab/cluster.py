"""Joining Ray: the one place that connects this process to a Ray cluster (the Ray executor, vLLM
engines placed as Ray actors, multi-node training). Ray is imported only when called."""

from __future__ import annotations

import logging

from collapselab.errors import ConfigError


def ensure_ray(address: str | None) -> bool:
    """Connect to Ray (``address`` None: start a local instance) unless this process already is
    (a Ray executor's task always is); returns whether this call initialised it (and so should
    shut it down). A cluster that cannot be reached is a :class:`ConfigError` naming
    ``run.ray_address``."""
    import ray

    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as err:
        raise ConfigError(f"run.ray_address: cannot connect to the Ray cluster at {address!r}: {err}") from err
    return True
