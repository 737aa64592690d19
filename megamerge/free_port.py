"""A free TCP port on this host for a process group's rendezvous (standard library only, so the
torch-free drivers of benchmarks/ can use it)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the OS reports free now; another process may take it before it is bound again, so
    callers use it at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
