"""What machine a number was measured on: every recorded number names its CPU (it may depend on it)."""

from __future__ import annotations

import platform
import subprocess


def cpu_name() -> str:
    """The processor's model name as ``lscpu`` reports it (``platform.processor()`` where there is no lscpu)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
