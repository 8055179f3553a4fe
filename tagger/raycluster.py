"""Joining a Ray cluster (or starting a local one) from library code; ray is imported lazily."""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

logger = logging.getLogger(__name__)


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[object]:
    """Use the running Ray (inside a job, or ``RAY_ADDRESS``) or start a local one for this call."""
    import ray

    started = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        kw = {"log_to_driver": False, "include_dashboard": False} if not address else {"log_to_driver": False}
        if not address and num_cpus:
            kw["num_cpus"] = num_cpus
        ray.init(address=address, ignore_reinit_error=True, **kw)
        started = True
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def gpus_available() -> float:
    """GPUs in the connected cluster (0 when none)."""
    import ray
    return float(ray.cluster_resources().get("GPU", 0.0))
