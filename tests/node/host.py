"""What a Kubernetes node changes on the machine it runs on, recorded before and put back after.

The kubelet, kube-proxy, containerd and the CNI plugins leave traces on the host: sysctls the
kubelet sets at start (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops), nftables tables
(iptables-nft's `filter`/`nat` with KUBE-* chains, kube-proxy's `kube-proxy` tables), network links
(our bridge, veth pairs of pods not torn down), mounts (the kubelet's shared bind mount of its root
folder, pod volumes, network namespaces, container root filesystems), fixed folders
(/var/lib/kubelet, /var/log/containers, /var/log/pods, /var/run/netns, ...) and `kubepods` cgroups
in every cgroup v1 hierarchy.

`HostState.record()` takes a snapshot; `restore(before)` puts each of those back, and
`differences(before, after)` lists what still differs (empty: the host is as it was). Nothing here
touches what was already there before the snapshot, except to write back a sysctl's old value.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Folders outside the harness's own that a node's parts create at fixed paths.
FIXED_FOLDERS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/run/netns",
    "/run/netns",
    "/var/lib/cni",
    "/etc/cni",
    "/opt/cni",
    "/var/lib/containerd",
    "/run/containerd",
    "/etc/kubernetes",
    "/var/lib/kube-proxy",
    "/tmp/spark",
)
#: The cgroup folder the kubelet (cgroupfs driver) puts every pod under, in each hierarchy.
CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods"


def _run(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=60)


def sysctls() -> dict[str, str]:
    """Every readable sysctl (`sysctl -a`), as key -> value."""
    out = _run("sysctl", "-a").stdout
    values = {}
    for line in out.splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            values[key.strip()] = value.strip()
    return values


def volatile_sysctls() -> set[str]:
    """Keys that change by themselves (counters, random values): read twice, a second apart."""
    first = sysctls()
    time.sleep(1)
    second = sysctls()
    changing = {k for k in first.keys() | second.keys() if first.get(k) != second.get(k)}
    # Counters and per-boot values that may not move within one second but move over a test run.
    prefixes = (
        "kernel.random.",
        "fs.dentry-state",
        "fs.inode-",
        "fs.file-nr",
        "kernel.ns_last_pid",
        "net.netfilter.nf_conntrack_count",
        "kernel.pty.nr",
        "fs.quota.",
        "kernel.tainted",
        "vm.stat_",
        "fs.aio-nr",
        "kernel.sched_",
        "fs.binfmt_misc.",
        "kernel.printk_ratelimit",
        "net.ipv4.tcp_mem",
        "net.ipv4.udp_mem",
        "kernel.keys.",
        "user.",
        "fs.mqueue.",
        "vm.lowmem_reserve_ratio",
        "vm.min_free_kbytes",
        "kernel.perf_event_max_sample_rate",
        "fs.epoll.",
        "dev.",
        "net.core.netdev_rss_key",
        "kernel.hung_task_",
    )
    return changing | {k for k in first if k.startswith(prefixes)}


def nft_tables() -> dict[str, str]:
    """Each nftables table ("family name") -> its listing."""
    tables = {}
    for line in _run("nft", "list", "tables").stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "table":
            family, name = parts[1], parts[2]
            tables[f"{family} {name}"] = _run("nft", "list", "table", family, name).stdout
    return tables


def links() -> set[str]:
    done = _run("ip", "-j", "link", "show")
    return {link["ifname"] for link in json.loads(done.stdout or "[]")}


def mounts() -> list[str]:
    """Mount points, in the order /proc/mounts lists them (a later mount may sit on an earlier one)."""
    return [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]


def cgroups() -> set[str]:
    """The `kubepods` folders present, in any hierarchy."""
    found = set()
    if CGROUP_ROOT.is_dir():
        for hierarchy in CGROUP_ROOT.iterdir():
            if (hierarchy / KUBEPODS).is_dir():
                found.add(str(hierarchy / KUBEPODS))
            if (hierarchy / f"{KUBEPODS}.slice").is_dir():
                found.add(str(hierarchy / f"{KUBEPODS}.slice"))
    return found


@dataclass
class HostState:
    sysctls: dict[str, str]
    volatile: set[str]
    nft: dict[str, str]
    links: set[str]
    mounts: list[str]
    folders: set[str]
    cgroups: set[str]
    notes: list[str] = field(default_factory=list)

    @classmethod
    def record(cls, volatile: set[str] | None = None) -> HostState:
        return cls(
            sysctls=sysctls(),
            volatile=volatile if volatile is not None else volatile_sysctls(),
            nft=nft_tables(),
            links=links(),
            mounts=mounts(),
            folders={f for f in FIXED_FOLDERS if os.path.lexists(f)},
            cgroups=cgroups(),
        )

    def stable_sysctls(self) -> dict[str, str]:
        return {k: v for k, v in self.sysctls.items() if k not in self.volatile}


def differences(before: HostState, after: HostState) -> list[str]:
    """What differs, one line each; empty when the host is as it was."""
    lines = []
    old, new = before.stable_sysctls(), after.stable_sysctls()
    for key in sorted(old.keys() | new.keys()):
        if key in before.volatile or key in after.volatile:
            continue
        if old.get(key) != new.get(key):
            lines.append(f"sysctl {key}: {old.get(key)!r} -> {new.get(key)!r}")
    for table in sorted(before.nft.keys() | after.nft.keys()):
        if before.nft.get(table) != after.nft.get(table):
            state = "added" if table not in before.nft else "removed" if table not in after.nft else "changed"
            lines.append(f"nftables table {table} {state}")
    for link in sorted(after.links - before.links):
        lines.append(f"link {link} added")
    for link in sorted(before.links - after.links):
        lines.append(f"link {link} removed")
    for point in sorted(set(after.mounts) - set(before.mounts)):
        lines.append(f"mount {point} added")
    for point in sorted(set(before.mounts) - set(after.mounts)):
        lines.append(f"mount {point} removed")
    for folder in sorted(after.folders - before.folders):
        lines.append(f"folder {folder} created")
    for group in sorted(after.cgroups - before.cgroups):
        lines.append(f"cgroup {group} created")
    return lines


def _remove_cgroup_tree(root: Path) -> None:
    """rmdir depth-first (a cgroup folder holds only the kernel's files, which rmdir accepts)."""
    for path, _dirs, _ in sorted(os.walk(root), key=lambda entry: -entry[0].count(os.sep)):
        try:
            os.rmdir(path)
        except OSError:
            pass


def restore(before: HostState, under: list[Path]) -> list[str]:
    """Put back what differs from `before`; returns one line per action taken. Mounts are
    unmounted only when they are new and lie under one of `under` or a fixed folder of a node."""
    actions = []
    now = HostState.record(volatile=before.volatile)
    # Mounts first (deepest and latest first): a folder cannot go while something is mounted in it.
    roots = [str(p) for p in under] + list(FIXED_FOLDERS)
    new_mounts = [
        m
        for m in now.mounts
        if m not in before.mounts and any(m == r or m.startswith(r.rstrip("/") + "/") for r in roots)
    ]
    for point in sorted(set(new_mounts), key=lambda m: (-m.count("/"), -now.mounts.index(m))):
        if _run("umount", "-l", point).returncode == 0:
            actions.append(f"unmounted {point}")
    for link in sorted(now.links - before.links):
        if _run("ip", "link", "delete", link).returncode == 0:
            actions.append(f"deleted link {link}")
    for table in sorted(now.nft.keys() - before.nft.keys()):
        family, name = table.split()
        if _run("nft", "delete", "table", family, name).returncode == 0:
            actions.append(f"deleted nftables table {table}")
    for table in sorted(now.nft.keys() & before.nft.keys()):
        if now.nft[table] != before.nft[table]:
            family, name = table.split()
            _run("nft", "delete", "table", family, name)
            subprocess.run(["nft", "-f", "-"], input=before.nft[table], text=True, capture_output=True, timeout=60)
            actions.append(f"restored nftables table {table}")
    for group in sorted(now.cgroups - before.cgroups):
        _remove_cgroup_tree(Path(group))
        actions.append(f"removed cgroup {group}")
    for folder in sorted(now.folders - before.folders, key=len, reverse=True):
        subprocess.run(["rm", "-rf", "--one-file-system", folder], capture_output=True, timeout=120)
        actions.append(f"removed {folder}")
    old, new = before.stable_sysctls(), now.stable_sysctls()
    for key in sorted(old):
        changed = key in new and new[key] != old[key]
        if changed and _run("sysctl", "-q", "-w", f"{key}={old[key]}").returncode == 0:
            actions.append(f"sysctl {key} = {old[key]} (was {new[key]})")
    return actions
