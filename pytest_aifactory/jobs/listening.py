"""Which addresses a service's processes listen on, from ``/proc`` on its node.

A service started on a compute node must listen on the node's address: one bound to 127.0.0.1
answers a probe from its own node only. The job writes what its service listens on beside the
endpoint, so the login node can say so instead of reporting a refused connection.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

__all__ = ["LISTENING_FILE", "listening", "loopback_only", "socket_inodes"]

LISTENING_FILE = "listening.json"
_LISTEN = "0A"  # TCP state in /proc/net/tcp


def socket_inodes(pids: list[int]) -> set[str]:
    """The inodes of the sockets that ``pids`` hold open (as ``/proc/net/*`` lists them)."""
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # /proc/net/tcp{,6} prints each 32-bit word in host (little-endian) order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def listening(pids: list[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket that ``pids`` (a service's process tree) listen on."""
    inodes = socket_inodes(pids)
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == _LISTEN and fields[9] in inodes:
                address, port = fields[1].rsplit(":", 1)
                found.add((_address(address), int(port, 16)))
    return sorted(found)


def loopback_only(sockets: list[tuple[str, int]], port: int) -> list[str]:
    """``127.0.0.1:PORT``... when ``port`` is listened on, but only on loopback addresses (else [])."""
    on_port = [address for address, bound in sockets if bound == port]
    if on_port and all(ipaddress.ip_address(address).is_loopback for address in on_port):
        return [f"{address}:{port}" for address in on_port]
    return []
