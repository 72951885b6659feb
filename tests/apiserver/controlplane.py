"""A Kubernetes control plane as local processes, for the apiserver tests: etcd, kube-apiserver and
kube-controller-manager on 127.0.0.1, and the Kubeflow Spark Operator's controller and webhook.

`make k8s-tools` builds the binaries into .sensorstream/tools/bin. No kubelet, scheduler or
container runtime: Pods are created and admitted (or refused) but never run. Every process is a
child of the test process, started with free ports and its own folders, and stopped by the object
that started it; nothing is left listening.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from sensorstream.local.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
#: Where `make k8s-tools` puts the binaries ($SENSORSTREAM_K8S_TOOLS overrides, for another cache).
TOOLS = Path(os.environ.get("SENSORSTREAM_K8S_TOOLS") or ROOT / ".sensorstream" / "tools")
BIN = TOOLS / "bin"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")
BUILD_COMMAND = "make k8s-tools"
#: The SparkConnect CRD (the operator's controller watches it), copied from the operator's module.
SPARK_OPERATOR_CRDS = TOOLS / "spark-operator-crds"
#: Labels of a namespace that enforces the `restricted` Pod Security Standard on Pods, and warns
#: about workloads (Deployments, CronJobs, ...) whose pod template would be refused.
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
}


def missing_binaries(names=BINARIES) -> list[str]:
    return [name for name in names if not os.access(BIN / name, os.X_OK)]


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the test process dies without stopping us."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Process:
    """One server process of ours, its output in a log file."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None):
        self.name, self.log = name, log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=log.parent,
                preexec_fn=_die_with_parent,
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; always reaped (wait), so no zombie is left."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def wait_for(what: str, check, timeout: float, processes: list[Process] = (), interval: float = 0.5):
    """Poll check() until it returns something truthy; fail early when one of our processes died."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        for process in processes:
            if not process.alive():
                raise RuntimeError(
                    f"{process.name} exited ({process.popen.returncode}) while waiting for "
                    f"{what}; the end of {process.log}:\n{process.tail()}"
                )
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class ControlPlane:
    """etcd + kube-apiserver (RBAC; PodSecurity among the default admission plugins) +
    kube-controller-manager (all default controllers), on 127.0.0.1 with free ports."""

    #: The address kube-apiserver binds to and advertises (a node's harness uses its bridge's).
    host = "127.0.0.1"

    def __init__(self, workdir: Path, bin_dir: Path = BIN):
        self.dir, self.bin = workdir, bin_dir
        self.processes: list[Process] = []
        self.token = secrets.token_hex(16)
        self.kubeconfig = workdir / "kubeconfig"
        self.ca = workdir / "pki" / "ca.crt"

    # --- start and stop ---------------------------------------------------------------------------
    def start(self) -> ControlPlane:
        try:
            self._pki()
            self._etcd()
            self._apiserver()
            self._controller_manager()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        process = Process(name, [str(self.bin / args[0]), *args[1:]], self.dir / f"{name}.log", env)
        self.processes.append(process)
        return process

    def _pki(self) -> None:
        """A CA, the server's certificate (127.0.0.1, localhost), the service-account key pair, and a
        static token of a cluster admin (group system:masters) for the tests, helm and kubectl."""
        pki = self.dir / "pki"
        pki.mkdir(parents=True)
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=sensorstream-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            cwd=pki,
        )
        (pki / "san.ext").write_text(f"subjectAltName={','.join(self.server_names())}\n")
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=kube-apiserver",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            cwd=pki,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
            cwd=pki,
        )
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
        (pki / "tokens.csv").write_text(f"{self.token},sensorstream-test-admin,1,system:masters\n")

    def server_names(self) -> list[str]:
        """The subject alternative names of the API server's certificate."""
        return ["IP:127.0.0.1", "DNS:localhost", "DNS:kubernetes.default.svc"]

    def _etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        etcd = self._spawn(
            "etcd",
            [
                "etcd",
                "--name",
                "test",
                "--data-dir",
                str(self.dir / "etcd"),
                "--listen-client-urls",
                self.etcd_url,
                "--advertise-client-urls",
                self.etcd_url,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"test={peer_url}",
                "--unsafe-no-fsync",  # test data: no fsync, which keeps the shared disk quiet
            ],
        )

        def healthy():
            try:
                with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as answer:
                    return json.load(answer).get("health") == "true"
            except (OSError, ValueError):
                return False

        wait_for("etcd", healthy, 60, [etcd])

    def _apiserver(self) -> None:
        pki = self.dir / "pki"
        self.port = free_port()
        self.server = f"https://{self.host}:{self.port}"
        apiserver = self._spawn(
            "kube-apiserver",
            [
                "kube-apiserver",
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={self.host}",
                f"--advertise-address={self.host}",
                f"--secure-port={self.port}",
                f"--tls-cert-file={pki / 'server.crt'}",
                f"--tls-private-key-file={pki / 'server.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/16",
                f"--cert-dir={self.dir / 'apiserver-certs'}",
                *self.apiserver_args(),
            ],
        )
        context = ssl.create_default_context(cafile=str(self.ca))

        def ready():
            request = urllib.request.Request(f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.token}"})
            try:
                with urllib.request.urlopen(request, timeout=5, context=context) as answer:
                    return answer.status == 200
            except (OSError, urllib.error.HTTPError):
                return False

        wait_for("kube-apiserver /readyz", ready, 120, [apiserver])
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "test", "cluster": {"server": self.server, "certificate-authority": str(self.ca)}}
                    ],
                    "users": [{"name": "admin", "user": {"token": self.token}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
                    "current-context": "test",
                }
            )
        )
        self.kubeconfig.chmod(0o600)

    def apiserver_args(self) -> list[str]:
        """Flags that differ between a control plane alone and one with a node."""
        return ["--authorization-mode=RBAC", "--endpoint-reconciler-type=none"]

    def _controller_manager(self) -> None:
        pki = self.dir / "pki"
        (self.dir / "flexvolume").mkdir()
        self._spawn(
            "kube-controller-manager",
            [
                "kube-controller-manager",
                f"--kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.dir / 'kcm-certs'}",
                "--leader-elect=false",
                "--controllers=*",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                # Without it, the controller manager creates /usr/libexec/kubernetes/...
                f"--flex-volume-plugin-dir={self.dir / 'flexvolume'}",
            ],
        )

    # --- using it -------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """An environment for kubectl and helm that talks to this server only."""
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "JAVA_HOME")}
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["HELM_CACHE_HOME"] = str(self.dir / "helm" / "cache")
        env["HELM_CONFIG_HOME"] = str(self.dir / "helm" / "config")
        env["HELM_DATA_HOME"] = str(self.dir / "helm" / "data")
        return env

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(self.bin / "kubectl"), *args], input=input, capture_output=True, text=True, env=self.env(), timeout=300
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(self.bin / "helm"), *args], capture_output=True, text=True, cwd=ROOT, env=self.env(), timeout=600
        )
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", "-o", "json", *args).stdout)

    def apply_crds(self, *folders: Path) -> None:
        """Server-side apply of every CustomResourceDefinition in the folders (read in place)."""
        files = [
            p
            for folder in folders
            for p in sorted(folder.rglob("*.y*ml"))
            if any(
                doc and doc.get("kind") == "CustomResourceDefinition"
                for doc in yaml.safe_load_all(p.read_text(encoding="utf-8"))
            )
        ]
        args = ["apply", "--server-side", "--force-conflicts"]
        for path in files:
            args += ["-f", str(path)]
        names = [
            line.split("/", 1)[1].split()[0] for line in self.kubectl(*args, "-o", "name").stdout.split() if "/" in line
        ]

        def established():
            crds = [c for c in self.get("crd")["items"] if c["metadata"]["name"] in names]
            return len(crds) == len(names) and all(
                any(
                    c["type"] == "Established" and c["status"] == "True"
                    for c in (crd.get("status") or {}).get("conditions") or []
                )
                for crd in crds
            )

        wait_for("the CRDs to be established", established, 120, self.processes)

    def create_namespace(self, name: str, labels: dict[str, str] = RESTRICTED) -> str:
        """A namespace (enforcing the restricted Pod Security Standard by default), once the
        controller manager has given it its default service account (pods need one)."""
        self.kubectl("create", "namespace", name)
        if labels:
            self.kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in labels.items()))
        wait_for(
            f"the default service account of namespace {name}",
            lambda: self.kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode == 0,
            120,
            self.processes,
        )
        return name


class SparkOperator:
    """The Spark Operator's controller (which runs spark-submit) and, optionally, its webhook, as
    local processes, registered with the control plane like the operator's chart does, but with a
    URL: https://localhost:<port>. The controller manages `namespaces`; the webhook mutates and
    validates in `webhook_namespaces` only, so the other namespaces see an operator without webhook."""

    NAME = "sensorstream-test-spark-operator"
    SYSTEM_NAMESPACE = "spark-operator"

    def __init__(self, plane: ControlPlane, namespaces: list[str], webhook_namespaces: list[str]):
        self.plane, self.namespaces, self.webhook_namespaces = plane, namespaces, webhook_namespaces
        self.dir = plane.dir / "spark-operator"
        self.processes: list[Process] = []

    def start(self) -> SparkOperator:
        self.dir.mkdir()
        try:
            self.plane.apply_crds(SPARK_OPERATOR_CRDS)
            self.plane.create_namespace(self.SYSTEM_NAMESPACE, labels={})
            if self.webhook_namespaces:
                self._webhook()
            self._controller()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        submissions = self._submission_ids()
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        # The controller writes each submission's pod templates to /tmp/spark/<submission id>
        # (a fixed path): remove those of ours.
        for submission in submissions:
            shutil.rmtree(Path("/tmp/spark") / submission, ignore_errors=True)

    def _submission_ids(self) -> list[str]:
        done = self.plane.kubectl(
            "get",
            "sparkapplications",
            "--all-namespaces",
            "-o",
            "jsonpath={.items[*].status.submissionID}",
            check=False,
        )
        return [s for s in done.stdout.split() if re.fullmatch(r"[0-9a-f-]+", s)] if done.returncode == 0 else []

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        process = Process(name, [str(self.plane.bin / "spark-operator"), *args], self.dir / f"{name}.log", env)
        self.processes.append(process)
        return process

    def _webhook(self) -> None:
        port = free_port()
        url = f"https://localhost:{port}"
        selector = {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": self.webhook_namespaces}
            ]
        }

        def hook(name, path, resources, operations, group, version, **extra):
            return {
                "name": f"{name}.sparkoperator.k8s.io",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {"url": url + path},
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "namespaceSelector": selector,
                "timeoutSeconds": 10,
                "rules": [
                    {"apiGroups": [group], "apiVersions": [version], "resources": resources, "operations": operations}
                ],
                **extra,
            }

        app = ("sparkapplications", ["CREATE", "UPDATE"], "sparkoperator.k8s.io", "v1beta2")
        configurations = [
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": self.NAME},
                "webhooks": [
                    hook(
                        "mutate--v1-pod",
                        "/mutate--v1-pod",
                        ["pods"],
                        ["CREATE"],
                        "",
                        "v1",
                        objectSelector={"matchLabels": {"sparkoperator.k8s.io/launched-by-spark-operator": "true"}},
                    ),
                    hook(
                        "mutate-sparkoperator-k8s-io-v1beta2-sparkapplication",
                        "/mutate-sparkoperator-k8s-io-v1beta2-sparkapplication",
                        [app[0]],
                        *app[1:],
                    ),
                ],
            },
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": self.NAME},
                "webhooks": [
                    hook(
                        "validate-sparkoperator-k8s-io-v1beta2-sparkapplication",
                        "/validate-sparkoperator-k8s-io-v1beta2-sparkapplication",
                        [app[0]],
                        *app[1:],
                    )
                ],
            },
        ]
        # The webhook writes its serving certificate (for localhost) and fills in the caBundle.
        webhook = self._spawn(
            "webhook",
            [
                "webhook",
                "start",
                f"--kubeconfig={self.plane.kubeconfig}",
                f"--namespaces={','.join(self.webhook_namespaces)}",
                f"--webhook-port={port}",
                f"--webhook-cert-dir={self.dir / 'webhook-certs'}",
                f"--webhook-secret-namespace={self.SYSTEM_NAMESPACE}",
                "--webhook-secret-name=spark-operator-webhook-certs",
                f"--webhook-svc-namespace={self.SYSTEM_NAMESPACE}",
                "--webhook-svc-name=spark-operator-webhook",
                f"--mutating-webhook-name={self.NAME}",
                f"--validating-webhook-name={self.NAME}",
                f"--health-probe-bind-address=127.0.0.1:{free_port()}",
                "--metrics-bind-address=0",
            ],
        )
        self.plane.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": configurations})
        )

        def serving():
            for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
                hooks = self.plane.get(kind, self.NAME)["webhooks"]
                if not all(h["clientConfig"].get("caBundle") for h in hooks):
                    return False
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_for("the Spark Operator webhook (serving, caBundle set)", serving, 120, [webhook])

    def _controller(self) -> None:
        import pyspark

        env = self.plane.env()
        env.update(
            {
                # The controller runs spark-submit from SPARK_HOME against this API server; the
                # submission client (fabric8) takes the token and CA from KUBECONFIG.
                "SPARK_HOME": str(Path(pyspark.__file__).parent),
                "KUBERNETES_SERVICE_HOST": self.plane.host,
                "KUBERNETES_SERVICE_PORT": str(self.plane.port),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                # spark-submit's own temporary files go to our folder, not /tmp
                "SPARK_SUBMIT_OPTS": f"-Djava.io.tmpdir={self.dir}",
            }
        )
        self._spawn(
            "controller",
            [
                "controller",
                "start",
                f"--kubeconfig={self.plane.kubeconfig}",
                f"--namespaces={','.join(self.namespaces)}",
                f"--health-probe-bind-address=127.0.0.1:{free_port()}",
                "--metrics-bind-address=0",
                "--pprof-bind-address=0",
            ],
            env=env,
        )

    def alive(self) -> list[Process]:
        return [p for p in self.processes if p.alive()]
