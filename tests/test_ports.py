"""Ports for the processes the project starts: free, never a source port, never handed out twice."""

import socket

from sensorstream.local.ports import ephemeral_range, free_ports


def test_blocks_are_free_and_clear_of_the_ephemeral_range():
    low, high = ephemeral_range()
    seen: set[int] = set()
    for _ in range(50):
        base = free_ports(3)
        block = set(range(base, base + 3))
        assert all(port < low or port > high for port in block)
        assert not seen & block
        seen |= block
        for port in block:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))
