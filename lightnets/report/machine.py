"""A description of the machine a measurement ran on, for tables, titles and JSON."""

from __future__ import annotations

import os
import platform
import socket


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    # imported here: the report package is also the CLI's table printer, which must not load torch
    import torch

    return {
        "hostname": socket.gethostname(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # idle OpenMP threads spin or sleep by it, which moves latencies; the lightnets command sets PASSIVE
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (OpenMP's default)"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
