"""The errors sensorstream raises on purpose, all under one root.

    SensorstreamError                         root: the CLI catches only this, prints one line, exits 1
     ├── ConfigError(ValueError)              a setting is invalid; names the setting and its env var (exit 2)
     ├── DependencyError(RuntimeError)        Java missing or too old, a jar folder missing
     ├── BrokerUnavailableError(ConnectionError)  no Kafka broker answers at the bootstrap servers
 │    ├── QuorumLostError                  brokers answer, but the cluster has no active controller
 │    └── NoKafkaAnswerError               a program listens there but gives no Kafka answer (a TLS or
 │                                         SASL listener asked in PLAINTEXT, say)
     ├── KafkaSecurityError(PermissionError)  the broker refused the login, or its certificate is not trusted
     ├── TopicMissingError(LookupError)       a topic the job needs does not exist
     ├── CheckpointError(RuntimeError)        a checkpoint folder belongs to another query, is damaged, or no
 │                                         longer matches its input topic
     └── LocalStackError(RuntimeError)        the embedded local broker failed to start or stop

Every message is one line and says what to do next.
"""


class SensorstreamError(Exception):
    """Root of every error sensorstream raises on purpose."""

    exit_code = 1


class ConfigError(SensorstreamError, ValueError):
    """A setting has an invalid value."""

    exit_code = 2

    def __init__(self, setting: str, env: str | None, problem: str):
        self.setting = setting
        self.env = env
        where = f"{setting} (env {env})" if env else setting
        super().__init__(f"invalid setting {where}: {problem}")


class DependencyError(SensorstreamError, RuntimeError):
    """Something the jobs need on this machine is missing: Java, a jar folder."""


class BrokerUnavailableError(SensorstreamError, ConnectionError):
    """No Kafka broker answered at the bootstrap servers."""

    def __init__(self, bootstrap_servers: str, detail: str = ""):
        self.bootstrap_servers = bootstrap_servers
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"Kafka is not reachable at {bootstrap_servers}{extra}; start the local broker with "
            "`sensorstream local up` or set KAFKA_BOOTSTRAP_SERVERS / --bootstrap-servers"
        )


class QuorumLostError(BrokerUnavailableError):
    """Brokers answer metadata, but none is the active controller: the KRaft quorum is lost."""

    def __init__(self, bootstrap_servers: str):
        self.bootstrap_servers = bootstrap_servers
        SensorstreamError.__init__(
            self,
            f"Kafka at {bootstrap_servers} answers but has no active controller: its controller quorum is lost "
            "(a majority of the controllers is down, or still electing); start the stopped brokers "
            "(`sensorstream local up` restarts the local ones) and retry",
        )


class NoKafkaAnswerError(BrokerUnavailableError):
    """The bootstrap port accepts connections, but nothing there answered Kafka's protocol as these
    settings speak it: most often a TLS or SASL listener asked in PLAINTEXT."""

    def __init__(self, bootstrap_servers: str, protocol: str, waited_s: float):
        self.bootstrap_servers = bootstrap_servers
        SensorstreamError.__init__(
            self,
            f"a program listens at {bootstrap_servers} but gave no Kafka answer within {waited_s:.0f} s with "
            f"KAFKA_SECURITY_PROTOCOL={protocol}; if its listener needs TLS or SASL, set KAFKA_SECURITY_PROTOCOL "
            "(SSL, SASL_SSL, SASL_PLAINTEXT) and the KAFKA_SASL_* / KAFKA_SSL_* settings; if it is a broker still "
            "starting, retry",
        )


class KafkaSecurityError(SensorstreamError, PermissionError):
    """A broker answered, but the connection's security failed: the broker refused the SASL login
    (wrong user or password), or TLS failed (a certificate not trusted, a listener without TLS)."""


class TopicMissingError(SensorstreamError, LookupError):
    """A topic the job reads or writes does not exist."""


class CheckpointError(SensorstreamError, RuntimeError):
    """A checkpoint folder cannot be used by this query."""


class LocalStackError(SensorstreamError, RuntimeError):
    """The embedded local Kafka broker could not be started, reached or stopped."""
