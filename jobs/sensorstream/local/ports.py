"""Free TCP ports on 127.0.0.1 for the processes this project starts, outside the ephemeral range.

`bind(0)` hands out a port from the kernel's ephemeral range, the range it also takes the source
ports of outgoing connections from. A number asked for that way and bound by a broker seconds
later can lose to any connection opened in between (CI once saw the second of three brokers die
with "Address already in use", most likely so: the first broker was already connecting to the
others' controllers). A port below the ephemeral range is never a source port, so only another
listener can take it; choosing at random among thousands makes that unlikely, and ports this
process has handed out are never handed out again.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 10_000  # clear of the registered ports most services listen on by default
HIGHEST = 29_999  # below Kubernetes' NodePort range (30000-32767), for the node the tests build
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's source-port range; Linux's default when the file cannot be read."""
    try:
        low, high = (int(field) for field in _RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def _candidates(count: int) -> range:
    """First ports of `count` consecutive ports, all below the ephemeral range (and NodePorts), or,
    where the kernel leaves too little room there, above it."""
    low, high = ephemeral_range()
    below = min(low - 1, HIGHEST)
    if below - LOWEST >= 1000:
        return range(LOWEST, below - count + 2)
    return range(high + 1, 65536 - count + 1)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports on 127.0.0.1 (a cluster's brokers use port+N-1)."""
    candidates = _candidates(count)
    for _ in range(500):
        base = random.choice(candidates)
        block = range(base, base + count)
        if not _handed_out.intersection(block) and all(_bindable(port) for port in block):
            _handed_out.update(block)
            return base
    raise OSError(f"no {count} consecutive free ports on 127.0.0.1 in {candidates.start}-{candidates.stop}")


def free_port() -> int:
    """One free port on 127.0.0.1, not handed out before by this process."""
    return free_ports(1)
