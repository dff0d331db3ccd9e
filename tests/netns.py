"""Hosts on one machine: network namespaces on a bridge, each with its own address.

``build(["a", "b", "c"])`` makes one namespace per host, a veth pair per host (``eth0``
inside it, the other end a port of the bridge in the root namespace) and a private /24 of
``10.77.N.0`` that no route of this machine uses yet. The root namespace has the subnet's
``.254`` on the bridge, so the test process reaches every host; the hosts reach each other
and their own loopback, nothing else (no default route, no forwarding). ``Host.cut()`` takes
a host's bridge port down: its packets are dropped, as when a cable is pulled.

Every name starts with ``cmh`` and carries a random tag, and the creating process's pid is in
each namespace's name and each link's alias: ``remove_leftovers()`` deletes what a dead run
left (killing the processes still in its namespaces) and leaves a live run's alone.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

PREFIX = "cmh"
ALIAS = "cosmos-multihost pid="
SUBNETS = [f"10.77.{n}" for n in range(256)]
"""Candidate /24s, the first one no route of this machine overlaps is taken."""
IP_TIMEOUT_S = 15


class NetnsError(RuntimeError):
    pass


def ip(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if check and proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def unavailable() -> str | None:
    """Why namespaces cannot be built here (not root, no iproute2, no netns support)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    probe = f"{PREFIX}probe{secrets.token_hex(3)}-{os.getpid()}"
    try:
        ip("netns", "add", probe)
    except (NetnsError, OSError, subprocess.TimeoutExpired) as err:
        return f"ip netns is unavailable: {err}"
    ip("netns", "del", probe, check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(text: str) -> int | None:
    """The pid after the last ``-`` of a namespace name, or after ``pid=`` in an alias."""
    tail = text.rsplit("=" if text.startswith(ALIAS) else "-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def kill_processes(netns: str) -> list[int]:
    """SIGKILL every process in ``netns``; their pids."""
    pids = [int(p) for p in ip("netns", "pids", netns, check=False).split() if p.isdigit()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def remove_namespace(netns: str) -> None:
    kill_processes(netns)
    ip("netns", "del", netns, check=False)


def remove_leftovers() -> list[str]:
    """Namespaces and links of earlier runs whose process is gone; what was removed."""
    removed: list[str] = []
    for line in ip("netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            owner = _owner(name)
            if owner is None or not _alive(owner):
                remove_namespace(name)
                removed.append(name)
    for link in json.loads(ip("-j", "link", "show", check=False) or "[]"):
        name, alias = link.get("ifname", ""), link.get("ifalias", "")
        if name.startswith(PREFIX) and alias.startswith(ALIAS):
            owner = _owner(alias)
            if owner is None or not _alive(owner):
                ip("link", "del", name, check=False)
                removed.append(name)
    return removed


def _free_subnet() -> str:
    used = []
    for route in json.loads(ip("-j", "route", "show", "table", "all", check=False) or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default":
            try:
                used.append(ipaddress.ip_network(dst, strict=False))
            except ValueError:
                continue
    for base in SUBNETS:
        candidate = ipaddress.ip_network(f"{base}.0/24")
        if not any(candidate.overlaps(u) for u in used if u.version == 4):
            return base
    raise NetnsError("no free 10.77.N.0/24 left for the test network")


@dataclass
class Host:
    name: str
    netns: str
    address: str
    port: str
    """Its veth end on the bridge, in the root namespace: its switch port."""

    @property
    def exec(self) -> list[str]:
        """The command prefix that runs a program on this host."""
        return ["ip", "netns", "exec", self.netns]

    def cut(self) -> None:
        """Its cable pulled: the bridge port goes down, every packet from or to it is lost
        (the host sees no error, only silence)."""
        ip("link", "set", self.port, "down")

    def restore(self) -> None:
        ip("link", "set", self.port, "up")


@dataclass
class Network:
    tag: str
    bridge: str
    gateway: str
    """The root namespace's address on the bridge: where the test process talks from."""
    hosts: dict[str, Host] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def teardown(self) -> list[str]:
        """Kill every process on the hosts, delete their links and namespaces and the bridge;
        whatever fails is reported, the rest still removed."""
        problems: list[str] = []
        for host in self.hosts.values():
            for step in (
                lambda h=host: kill_processes(h.netns),
                lambda h=host: ip("link", "del", h.port, check=False),
                lambda h=host: ip("netns", "del", h.netns, check=False),
            ):
                try:
                    step()
                except Exception as err:  # teardown goes on whatever fails
                    problems.append(f"{host.name}: {err}")
        try:
            ip("link", "del", self.bridge, check=False)
        except Exception as err:
            problems.append(f"bridge: {err}")
        return problems


def build(names: Sequence[str]) -> Network:
    """Hosts ``names`` (one letter or digit each) at ``.1``, ``.2`` ... of a free subnet."""
    remove_leftovers()
    pid = os.getpid()
    tag = secrets.token_hex(3)
    base = _free_subnet()
    alias = f"{ALIAS}{pid}"
    net = Network(tag=tag, bridge=f"{PREFIX}{tag}br", gateway=f"{base}.254")
    try:
        ip("link", "add", net.bridge, "type", "bridge")
        ip("link", "set", net.bridge, "alias", alias)
        ip("addr", "add", f"{net.gateway}/24", "dev", net.bridge)
        ip("link", "set", net.bridge, "up")
        for number, name in enumerate(names, start=1):
            host = Host(
                name=name,
                netns=f"{PREFIX}{tag}{name}-{pid}",
                address=f"{base}.{number}",
                port=f"{PREFIX}{tag}{name}",
            )
            net.hosts[name] = host
            ip("netns", "add", host.netns)
            ip("link", "add", host.port, "type", "veth", "peer", "name", "eth0",
               "netns", host.netns)  # fmt: skip
            ip("link", "set", host.port, "alias", alias)
            ip("link", "set", host.port, "master", net.bridge, "up")
            inside = ["netns", "exec", host.netns, "ip"]
            ip(*inside, "link", "set", "lo", "up")
            ip(*inside, "addr", "add", f"{host.address}/24", "dev", "eth0")
            ip(*inside, "link", "set", "eth0", "up")
    except BaseException:
        net.teardown()
        raise
    return net
