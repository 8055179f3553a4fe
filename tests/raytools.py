"""Helpers shared by the tests that run Ray in subprocesses."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# loopback Ray without token auth (a stray ~/.ray/auth_token would switch it on) or usage stats
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
RAY = str(Path(sys.executable).parent / "ray")


def stop_orphaned_ray() -> None:
    """A driver killed with os._exit leaves its local Ray processes behind: stop them."""
    subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120, env=ENV)
