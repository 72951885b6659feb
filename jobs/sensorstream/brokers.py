"""Talking to a Kafka cluster's metadata: is it reachable, do the topics exist.

Every job checks here first, so a missing broker or topic, a refused login or an untrusted
certificate is one clear line within seconds instead of a client retrying forever or a JVM
stack trace.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from kafka import KafkaAdminClient
from kafka.errors import (
    KafkaError,
    NoBrokersAvailable,
    NodeNotReadyError,
    SaslAuthenticationFailedError,
    UnsupportedSaslMechanismError,
)

from sensorstream.config import Settings, declaration, kafka_python_kwargs
from sensorstream.errors import (
    BrokerUnavailableError,
    KafkaSecurityError,
    NoKafkaAnswerError,
    QuorumLostError,
    TopicMissingError,
)
from sensorstream.kafka_producer import require_kafka_python_internals

#: What a broker says when it refuses a login; kafka-python only logs it (then reports another error).
_REFUSALS = (SaslAuthenticationFailedError, UnsupportedSaslMechanismError)


class _Refusals(logging.Filter):
    """On kafka-python's connection logger: keeps the first refused login, lets no line through."""

    def __init__(self):
        super().__init__()
        self.refused: KafkaError | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        found = next((arg for arg in args if isinstance(arg, _REFUSALS)), None)
        if found is not None and self.refused is None:
            self.refused = found
        return False


def _envs(*names: str) -> str:
    return " / ".join(declaration(name).env for name in names)


def refused_login(settings: Settings, error: KafkaError) -> KafkaSecurityError:
    """The one line for a login the broker refused, naming the settings to fix."""
    if isinstance(error, UnsupportedSaslMechanismError):
        return KafkaSecurityError(
            f"Kafka at {settings.bootstrap_servers} does not offer SASL mechanism "
            f"{settings.sasl_mechanism}: set {_envs('sasl_mechanism')} to one it offers"
        )
    return KafkaSecurityError(
        f"Kafka at {settings.bootstrap_servers} refused the login of user {settings.sasl_username!r} "
        f"({settings.sasl_mechanism}): authentication failed, wrong user name or password; set "
        f"{_envs('sasl_username', 'sasl_password')} to a user the cluster has (the local broker's is the one "
        "`sensorstream local up --sasl-ssl` created)"
    )


def tls_failed(settings: Settings, error: ssl.SSLError) -> KafkaSecurityError:
    """The one line for a TLS connection that failed, naming the settings to fix."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return KafkaSecurityError(
            f"the TLS certificate of Kafka at {settings.bootstrap_servers} is not trusted ({error.verify_message}); "
            f"set {_envs('ssl_ca_location')} to the CA certificate (PEM) that signed it, and give the broker a "
            "certificate for the host name in KAFKA_BOOTSTRAP_SERVERS"
        )
    return KafkaSecurityError(
        f"TLS with Kafka at {settings.bootstrap_servers} failed ({error.reason or error}); check that "
        f"{_envs('security_protocol')}={settings.security_protocol} is what the broker's listener speaks"
    )


def accepts_connections(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether `host:port` accepts a TCP connection (something listens there, Kafka or not)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _listening(bootstrap_servers: str) -> bool:
    """Whether any bootstrap address accepts a TCP connection."""
    for address in bootstrap_servers.split(","):
        host, _, port = address.strip().rpartition(":")
        if port.isdigit() and accepts_connections(host.strip("[]") or "localhost", int(port), timeout_s=1):
            return True
    return False


@contextmanager
def admin_client(settings: Settings) -> Iterator[KafkaAdminClient]:
    """A kafka-python admin client, or BrokerUnavailableError within about `settings.connect_timeout`.

    First, DependencyError if the installed kafka-python lacks the internals that the login refusal
    and quorum loss below (and the producer's corrections) rely on: every job starts here."""
    require_kafka_python_internals()
    timeout_s = settings.connect_timeout.total_seconds()
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    client = None
    # kafka-python logs every refused connection at ERROR level; the caller gets one clear error.
    # Its connection logger alone stays open, to a filter that keeps a refused login and drops the lines.
    quiet, connections, refusals = logging.getLogger("kafka"), logging.getLogger("kafka.conn"), _Refusals()
    levels = quiet.level, connections.level
    quiet.setLevel(logging.CRITICAL)
    connections.setLevel(logging.ERROR)
    connections.addFilter(refusals)
    try:
        while client is None:
            try:
                client = KafkaAdminClient(
                    **kafka_python_kwargs(settings),
                    client_id="sensorstream-admin",
                    request_timeout_ms=int(timeout_s * 1000),
                    api_version_auto_timeout_ms=int(min(timeout_s, 5) * 1000),
                )
            except ssl.SSLError as exc:  # waiting does not make a certificate trusted
                raise tls_failed(settings, exc) from None
            except (NoBrokersAvailable, KafkaError, OSError) as exc:
                if refusals.refused is not None:  # nor does it make a password right
                    raise refused_login(settings, refusals.refused) from None
                last = exc
                if time.monotonic() >= deadline:
                    if isinstance(last, NodeNotReadyError):  # a broker answered; no controller did
                        raise QuorumLostError(settings.bootstrap_servers) from None
                    if _listening(settings.bootstrap_servers):
                        raise NoKafkaAnswerError(
                            settings.bootstrap_servers, settings.security_protocol, timeout_s
                        ) from None
                    raise BrokerUnavailableError(settings.bootstrap_servers, type(last).__name__) from None
                time.sleep(0.5)
    finally:
        connections.removeFilter(refusals)
        quiet.setLevel(levels[0])
        connections.setLevel(levels[1])
    try:
        yield client
    finally:
        client.close()


def existing_topics(settings: Settings) -> set[str]:
    with admin_client(settings) as admin:
        return set(admin.list_topics())


def require_topics(settings: Settings, topics: Iterable[str], wait_s: float = 3.0) -> set[str]:
    """Raise TopicMissingError naming the first topic the cluster does not have; else return every
    topic the cluster has (so a caller can look for an optional one without asking again).

    A topic created a moment ago may not have reached the broker's metadata yet: a missing topic
    is looked for again for up to `wait_s` seconds.
    """
    topics = list(topics)
    deadline = time.monotonic() + wait_s
    while True:
        present = existing_topics(settings)
        missing = [topic for topic in topics if topic not in present]
        if not missing:
            return present
        if time.monotonic() >= deadline:
            raise TopicMissingError(
                f"topic {missing[0]!r} does not exist on {settings.bootstrap_servers}; create it "
                "(`sensorstream local up` creates the chart's topics on the local broker)"
            )
        time.sleep(0.25)
