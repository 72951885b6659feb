"""A real single-node Kubernetes cluster as local processes, for `make test-node`.

On top of the apiserver tests' control plane (etcd, kube-apiserver, kube-controller-manager), here
bound to a bridge of ours with Node authorization: kube-scheduler, containerd 2.x (Debian's runc)
under a subreaper, the kubelet, kube-proxy (nftables) and CoreDNS, the CNI bridge plugin on that
bridge, the pause image compiled from Kubernetes' source, static local PersistentVolumes with a
default StorageClass, and images imported into containerd. `make node-tools` builds the binaries
and the pause image; `make image-archive` exports the project's image.

The network stays on this machine: the bridge has a /24 of its own; the CNI plugin neither makes
the host a gateway nor masquerades, and IP forwarding stays off, so nothing a Pod sends can leave
the machine. Pods reach the API server, CoreDNS and the Kafka broker on the bridge's address (host
processes), and each other on the bridge.

Every process is a child of the test process and stopped by pid; `stop()` then puts back what the
node's parts changed on the host (host.py) and returns what still differs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import yaml

from apiserver.controlplane import BIN, TOOLS, ControlPlane, Process, _openssl, free_port, wait_for

from .host import HostState, differences, restore

#: The node's bridge and its /24: the only addresses besides 127.0.0.1 the suite ever uses.
BRIDGE = "ssnode0"
SUBNET_PREFIX = "10.244.77"
HOST_IP = f"{SUBNET_PREFIX}.1"
#: The bridge's MAC, set once (as the CNI bridge plugin does for a bridge it makes: 0a:58 and the
#: IPv4 address). A bridge without one takes the lowest MAC of its ports and changes it as Pods
#: come and go; every Pod's ARP entry for the gateway then points nowhere until it expires, and
#: its connections to the broker stall (kubernetes/kubernetes#30783). That stalled the producer
#: Pod for minutes in the node suite, until its liveness probe restarted it.
BRIDGE_MAC = "0a:58:" + ":".join(f"{int(octet):02x}" for octet in HOST_IP.split("."))
POD_RANGE = (f"{SUBNET_PREFIX}.10", f"{SUBNET_PREFIX}.250")
SERVICE_CIDR = "10.96.0.0/16"
NODE_NAME = "sensorstream-node"
CLUSTER_DOMAIN = "cluster.local"
#: Binaries `make node-tools` adds to those of `make k8s-tools`.
NODE_BINARIES = ("kube-scheduler", "kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2", "ctr", "coredns")
PAUSE_ARCHIVE = TOOLS / "images" / "pause.tar"
STORAGE_CLASS = "sensorstream-local"
RUNC = "/usr/sbin/runc"
SYSTEM_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease"}
CNI_BIN = "/usr/lib/cni"


def archive_image_name(archive: Path) -> str:
    """The name an image archive (docker-archive, as `buildah push` writes it) carries."""
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    return manifest[0]["RepoTags"][0]


class MemorySampler:
    """The machine's memory in use (MemTotal - MemAvailable) every 2 s: its value at the start and
    its peak, for the figures (the whole machine: the node, its Pods, the broker, the tests)."""

    def __init__(self):
        self.baseline = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    @staticmethod
    def used() -> int:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) * 1024

    def start(self) -> None:
        self.baseline = self.peak = self.used()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(2):
            self.peak = max(self.peak, self.used())

    def stop(self) -> None:
        self._stop.set()

    def line(self) -> str:
        return (
            f"memory in use: {self.baseline / 2**30:.1f} GiB before the node, peak {self.peak / 2**30:.1f} GiB "
            f"(+{(self.peak - self.baseline) / 2**30:.1f} GiB)"
        )


class NodeControlPlane(ControlPlane):
    """The control plane of a cluster with a node: bound to the bridge's address, Node and RBAC
    authorization, a client certificate for the kubelet API (`kubectl logs`/`exec`), and the
    `kubernetes` Service's endpoint kept by the API server (kube-proxy routes 10.96.0.1 to it)."""

    host = HOST_IP

    def server_names(self) -> list[str]:
        return [
            f"IP:{HOST_IP}",
            "IP:127.0.0.1",
            "IP:10.96.0.1",
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            f"DNS:kubernetes.default.svc.{CLUSTER_DOMAIN}",
        ]

    def apiserver_args(self) -> list[str]:
        pki = self.dir / "pki"
        return [
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _pki(self) -> None:
        super()._pki()
        pki = self.dir / "pki"
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
            "-keyout",
            "kubelet-client.key",
            "-out",
            "kubelet-client.csr",
            cwd=pki,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            "kubelet-client.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "kubelet-client.crt",
            cwd=pki,
        )
        # The kubelet's identity for the Node authorizer: user system:node:<name> in group system:nodes.
        self.kubelet_token = os.urandom(16).hex()
        with open(pki / "tokens.csv", "a") as tokens:
            tokens.write(f'{self.kubelet_token},system:node:{NODE_NAME},2,"system:nodes"\n')

    def kubeconfig_for(self, name: str, token: str) -> Path:
        path = self.dir / f"{name}.kubeconfig"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "node", "cluster": {"server": self.server, "certificate-authority": str(self.ca)}}
                    ],
                    "users": [{"name": name, "user": {"token": token}}],
                    "contexts": [{"name": "node", "context": {"cluster": "node", "user": name}}],
                    "current-context": "node",
                }
            )
        )
        path.chmod(0o600)
        return path


class Node:
    """The whole cluster: `start()` brings it up to a Ready node; `stop()` takes it down and
    returns the lines by which the host still differs from before (empty: as it was)."""

    def __init__(self, workdir: Path, bin_dir: Path = BIN):
        self.dir, self.bin = workdir, bin_dir
        self.plane = NodeControlPlane(workdir / "control-plane", bin_dir)
        self.processes: list[Process] = []
        self.containerd_socket = workdir / "containerd" / "containerd.sock"
        self.before: HostState | None = None
        self.timings: dict[str, float] = {}
        self.restore_actions: list[str] = []
        self.host_differences: list[str] | None = None  # set by stop()
        self.memory = MemorySampler()

    # --- start -----------------------------------------------------------------------------------
    def start(self) -> Node:
        # A bridge of this name is ours, left by a run killed before its teardown: gone before the
        # host's state is recorded, so the teardown does not bring it back.
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)
        self.before = HostState.record()
        self.memory.start()
        try:
            self._timed("bridge", self._bridge)
            self.plane.dir.mkdir(parents=True)
            self._timed("control plane", self.plane.start)
            self._timed("scheduler", self._scheduler)
            self._timed("containerd", self._containerd)
            self._timed("pause image", lambda: self.import_image(PAUSE_ARCHIVE))
            self._timed("kubelet", self._kubelet)
            self._timed("kube-proxy", self._kube_proxy)
            self._timed("coredns", self._coredns)
            self._timed("node Ready", self._wait_ready)
            self._timed("storage", self._storage)
        except BaseException:
            self.stop()
            raise
        return self

    def _timed(self, what: str, step) -> None:
        started = time.monotonic()
        step()
        self.timings[what] = time.monotonic() - started

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        process = Process(name, args, self.dir / f"{name}.log", env)
        self.processes.append(process)
        return process

    def _bridge(self) -> None:
        subprocess.run(
            ["ip", "link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge"], check=True, capture_output=True
        )
        subprocess.run(["ip", "addr", "add", f"{HOST_IP}/24", "dev", BRIDGE], check=True, capture_output=True)
        subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True, capture_output=True)
        # Service addresses to the bridge too: before kube-proxy's rules are in place (or after
        # they are gone) a packet to a ClusterIP goes nowhere rather than to the default route.
        subprocess.run(["ip", "route", "add", SERVICE_CIDR, "dev", BRIDGE], check=True, capture_output=True)

    def _scheduler(self) -> None:
        self._spawn(
            "kube-scheduler",
            [
                str(self.bin / "kube-scheduler"),
                f"--kubeconfig={self.plane.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
            ],
        )

    def _containerd(self) -> None:
        root = self.dir / "containerd"
        (self.dir / "cni" / "net").mkdir(parents=True)
        (root / "root").mkdir(parents=True)
        config = root / "config.toml"
        # Config version 3 (containerd 2.x). This VM lacks CAP_SYS_RESOURCE: without
        # restrict_oom_score_adj every Pod sandbox fails (runc cannot write oom_score_adj -998).
        config.write_text(f"""version = 3
root = "{root / "root"}"
state = "{root / "state"}"
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "{self.pause_image}"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{CNI_BIN}"]
    conf_dir = "{self.dir / "cni" / "net"}"
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
    BinaryName = "{RUNC}"
""")
        (self.dir / "cni" / "net" / "10-sensorstream.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "sensorstream-node",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isGateway": False,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "dataDir": str(self.dir / "cni" / "ipam"),
                                "ranges": [
                                    [
                                        {
                                            "subnet": f"{SUBNET_PREFIX}.0/24",
                                            "rangeStart": POD_RANGE[0],
                                            "rangeEnd": POD_RANGE[1],
                                            "gateway": HOST_IP,
                                        }
                                    ]
                                ],
                                "routes": [{"dst": "0.0.0.0/0", "gw": HOST_IP}],
                            },
                        },
                        {"type": "loopback"},
                    ],
                }
            )
        )
        env = dict(os.environ)
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"  # our containerd-shim-runc-v2 first
        # tini -s: a subreaper, so the shims containerd detaches are reaped when they exit.
        containerd = self._spawn(
            "containerd", ["tini", "-s", "--", str(self.bin / "containerd"), "--config", str(config)], env
        )
        wait_for("containerd's socket", lambda: self.ctr("version", check=False).returncode == 0, 60, [containerd])

    @property
    def pause_image(self) -> str:
        return archive_image_name(PAUSE_ARCHIVE)

    def ctr(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(self.bin / "ctr"), "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    def import_image(self, archive: Path) -> None:
        """An image archive (docker-archive) into containerd's k8s.io namespace: no registry."""
        if not archive.is_file():
            raise FileNotFoundError(f"{archive} not found")
        self.ctr("images", "import", str(archive))

    def _kubelet(self) -> None:
        kubelet_dir = self.dir / "kubelet"
        kubelet_dir.mkdir()
        config = self.dir / "kubelet.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    # This machine's cgroups are v1 (hybrid) and its PID 1 is not systemd.
                    "failCgroupV1": False,
                    "cgroupDriver": "cgroupfs",
                    "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
                    "address": HOST_IP,
                    "port": free_port(),
                    "readOnlyPort": 0,
                    "healthzBindAddress": "127.0.0.1",
                    "healthzPort": free_port(),
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": True},
                        "x509": {"clientCAFile": str(self.plane.ca)},
                    },
                    "authorization": {"mode": "Webhook"},
                    "clusterDomain": CLUSTER_DOMAIN,
                    "clusterDNS": [HOST_IP],
                    "resolvConf": "",
                    "podLogsDir": str(self.dir / "pod-logs"),
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "evictionHard": {
                        "memory.available": "200Mi",
                        "nodefs.available": "1%",
                        "imagefs.available": "1%",
                        "nodefs.inodesFree": "1%",
                    },
                    "maxPods": 30,
                    "serializeImagePulls": False,
                    "staticPodPath": "",
                    "syncFrequency": "10s",
                    "fileCheckFrequency": "10s",
                    "nodeStatusUpdateFrequency": "5s",
                }
            )
        )
        kubeconfig = self.plane.kubeconfig_for("kubelet", self.plane.kubelet_token)
        self.kubelet = self._spawn(
            "kubelet",
            [
                str(self.bin / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={kubelet_dir}",
                f"--cert-dir={kubelet_dir / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={HOST_IP}",
            ],
        )

    def _kube_proxy(self) -> None:
        config = self.dir / "kube-proxy.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "mode": "nftables",
                    "clientConnection": {"kubeconfig": str(self.plane.kubeconfig)},
                    "hostnameOverride": NODE_NAME,
                    "clusterCIDR": f"{SUBNET_PREFIX}.0/24",
                    "bindAddress": HOST_IP,
                    "healthzBindAddress": f"127.0.0.1:{free_port()}",
                    "metricsBindAddress": f"127.0.0.1:{free_port()}",
                    # Leave the host's conntrack table size and timeouts as they are.
                    "conntrack": {
                        "maxPerCore": 0,
                        "min": 0,
                        "tcpEstablishedTimeout": "0s",
                        "tcpCloseWaitTimeout": "0s",
                    },
                    "nodePortAddresses": [f"{HOST_IP}/32"],
                }
            )
        )
        self._spawn("kube-proxy", [str(self.bin / "kube-proxy"), f"--config={config}"])

    def _coredns(self) -> None:
        corefile = self.dir / "Corefile"
        # Cluster names only: no upstream, so a name outside the cluster gets no answer from afar.
        corefile.write_text(f""".:53 {{
    bind {HOST_IP}
    errors
    health 127.0.0.1:{free_port()}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self.plane.kubeconfig} test
        pods insecure
    }}
    cache 5
}}
""")
        self._spawn("coredns", [str(self.bin / "coredns"), "-conf", str(corefile)])

    def _wait_ready(self) -> None:
        def ready():
            done = self.plane.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
            if done.returncode != 0:
                return False
            conditions = json.loads(done.stdout)["status"].get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        wait_for(f"node {NODE_NAME} Ready", ready, 180, self.processes + self.plane.processes, interval=1)

    def _storage(self) -> None:
        """A default StorageClass without a provisioner, and local PersistentVolumes on folders of
        ours (the kubelet applies a Pod's fsGroup to them)."""
        self.plane.kubectl(
            "apply",
            "-f",
            "-",
            input=yaml.safe_dump(
                {
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": {
                        "name": STORAGE_CLASS,
                        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                    },
                    "provisioner": "kubernetes.io/no-provisioner",
                    "volumeBindingMode": "WaitForFirstConsumer",
                    "reclaimPolicy": "Retain",
                }
            ),
        )
        for index in range(6):
            self.add_volume(f"local-{index}")

    def add_volume(self, name: str, size: str = "2Gi") -> None:
        folder = self.dir / "volumes" / name
        folder.mkdir(parents=True)
        self.plane.kubectl(
            "apply",
            "-f",
            "-",
            input=yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": name},
                    "spec": {
                        "capacity": {"storage": size},
                        "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": STORAGE_CLASS,
                        "local": {"path": str(folder)},
                        "nodeAffinity": {
                            "required": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}
                                        ]
                                    }
                                ]
                            }
                        },
                    },
                }
            ),
        )

    # --- stop ------------------------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Everything down, the host put back; what still differs from before, one line each.
        A second call only returns the first one's answer."""
        if self.host_differences is not None:
            return self.host_differences
        self.memory.stop()
        self._drain()
        for process in reversed(self.processes):
            if process.name != "containerd":
                process.stop()
        self._remove_containers()
        for process in self.processes:
            if process.name == "containerd":
                process.stop()
        self._kill_leftover_shims()
        self.processes.clear()
        self.plane.stop()
        if self.before is None:
            self.host_differences = []
            return self.host_differences
        self.restore_actions = restore(self.before, under=[self.dir])
        self.host_differences = differences(self.before, HostState.record(volatile=self.before.volatile))
        return self.host_differences

    def _drain(self) -> None:
        """Delete the namespaces with workloads and wait (bounded) until the kubelet has stopped
        their Pods: it tears down their sandboxes and networks the proper way (CNI DEL). Deleting
        the namespace, not its Pods, keeps their controllers from making new ones meanwhile."""
        if not self.plane.processes or not any(p.alive() for p in self.plane.processes):
            return
        done = self.plane.kubectl("get", "pods", "--all-namespaces", "-o", "json", check=False)
        if done.returncode != 0:
            return
        namespaces = {p["metadata"]["namespace"] for p in json.loads(done.stdout)["items"]}
        for namespace in namespaces - SYSTEM_NAMESPACES:
            self.plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        for namespace in namespaces & SYSTEM_NAMESPACES:
            self.plane.kubectl("delete", "pods", "--all", "-n", namespace, "--wait=false", check=False)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            left = self.plane.kubectl("get", "pods", "--all-namespaces", "-o", "name", check=False)
            if left.returncode != 0 or not left.stdout.strip():
                break
            time.sleep(2)
        time.sleep(3)  # the kubelet removes the sandboxes after the Pods are gone

    def _remove_containers(self) -> None:
        """Whatever the kubelet left: kill and delete the tasks and containers (their shims exit)."""
        if not self.containerd_socket.exists():
            return
        listed = self.ctr("containers", "list", "-q", check=False, timeout=30)
        for container in listed.stdout.split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", container, check=False, timeout=30)
        time.sleep(1)
        for container in listed.stdout.split():
            self.ctr("tasks", "delete", "-f", container, check=False, timeout=30)
            self.ctr("containers", "delete", container, check=False, timeout=30)

    def _kill_leftover_shims(self) -> None:
        """Shims of our containerd (their command line names our socket) still running: SIGKILL."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (
                cmdline
                and cmdline[0].endswith(b"containerd-shim-runc-v2")
                and str(self.containerd_socket).encode() in b" ".join(cmdline)
            ):
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # --- using it --------------------------------------------------------------------------------
    def alive(self) -> list[Process]:
        return [p for p in self.processes + self.plane.processes if p.alive()]
