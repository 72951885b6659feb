"""Bad values are rejected before anything reaches a cluster, with a message naming the value:
values.schema.json for single values, templates/_validate.tpl for rules across values.
One case per rule."""

from __future__ import annotations

import pytest

from support.chart import run_helm, template_args

pytestmark = pytest.mark.chart

# (rule, --set / --set-json arguments, what the message must say)
SCHEMA_RULES = [
    ("unknown top-level key", ["--set", "replicaCount=2"], "additional properties 'replicaCount' not allowed"),
    ("unknown nested key (typo)", ["--set", "producer.rates=2"], "additional properties 'rates' not allowed"),
    ("empty image repository", ["--set", "image.repository="], "/image/repository"),
    ("pull policy", ["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
    ("topic name characters", ["--set", "topics.input.name=readings topic"], "/topics/input/name"),
    ("topic partitions >= 1", ["--set", "topics.output.partitions=0"], "/topics/output/partitions"),
    ("topic replicas >= 1", ["--set", "topics.deadLetter.replicas=0"], "/topics/deadLetter/replicas"),
    (
        "topic config values are scalars",
        ["--set-json", 'topics.input.config={"retention.ms":[1]}'],
        "/topics/input/config/retention.ms",
    ),
    (
        "bootstrap servers host:port",
        ["--set", "kafka.enabled=false", "--set", "kafka.bootstrapServers=kafka"],
        "/kafka/bootstrapServers",
    ),
    ("Kafka version Strimzi 1.2.0 supports", ["--set", "kafka.version=3.9.0"], "/kafka/version"),
    ("Kafka nodes >= 1", ["--set", "kafka.replicas=0"], "/kafka/replicas"),
    ("storage type", ["--set", "kafka.storage.type=hostPath"], "/kafka/storage/type"),
    ("security protocol", ["--set", "kafka.security.protocol=TLS"], "/kafka/security/protocol"),
    ("SASL mechanism", ["--set", "kafka.security.saslMechanism=GSSAPI"], "/kafka/security/saslMechanism"),
    ("cluster name is a DNS label", ["--set", "kafka.clusterName=My_Cluster"], "/kafka/clusterName"),
    ("producer sensors >= 1", ["--set", "producer.sensors=0"], "/producer/sensors"),
    ("producer rate >= 0", ["--set", "producer.rate=-1"], "/producer/rate"),
    ("bad ratio within 0..1", ["--set", "producer.badRatio=1.5"], "/producer/badRatio"),
    ("late ratio within 0..1", ["--set", "producer.lateRatio=-0.1"], "/producer/lateRatio"),
    ("seed is an integer", ["--set", "producer.seed=abc"], "/producer/seed"),
    ("sinks from the known set", ["--set-json", 'stream.sinks=["console","s3"]'], "/stream/sinks/1"),
    ("at least one sink", ["--set-json", "stream.sinks=[]"], "/stream/sinks"),
    ("window is a duration", ["--set", "stream.window=five minutes"], "/stream/window"),
    ("slide is a duration or empty", ["--set", "stream.slide=soon"], "/stream/slide"),
    ("watermark is a duration", ["--set", "stream.watermark=10 minutos"], "/stream/watermark"),
    ("trigger is a duration", ["--set", "stream.trigger=often"], "/stream/trigger"),
    ("starting offsets", ["--set", "stream.startingOffsets=beginning"], "/stream/startingOffsets"),
    ("max offsets per trigger >= 1", ["--set", "stream.maxOffsetsPerTrigger=0"], "/stream/maxOffsetsPerTrigger"),
    ("Spark version is the image's", ["--set", "stream.sparkVersion=3.5.5"], "/stream/sparkVersion"),
    ("restart policy type", ["--set", "stream.restartPolicy.type=Sometimes"], "/stream/restartPolicy/type"),
    (
        "checkpoint path is absolute",
        ["--set", "stream.checkpoint.mountPath=checkpoints"],
        "/stream/checkpoint/mountPath",
    ),
    ("claim size is a quantity", ["--set", "stream.checkpoint.size=lots"], "/stream/checkpoint/size"),
    ("access mode", ["--set", "report.reports.accessMode=ReadOnlyMany"], "/report/reports/accessMode"),
    ("Spark memory format", ["--set", "stream.driver.memory=1 GB"], "/stream/driver/memory"),
    ("executors >= 1", ["--set", "stream.executor.instances=0"], "/stream/executor/instances"),
    (
        "sparkConf keys are spark.*",
        ["--set-json", 'stream.sparkConf={"shuffle.partitions":"4"}'],
        "at '/stream/sparkConf': additional properties 'shuffle.partitions' not allowed",
    ),
    (
        "env names are variable names",
        ["--set-json", 'settings.extraEnv={"LOG-LEVEL":"debug"}'],
        "at '/settings/extraEnv': additional properties 'LOG-LEVEL' not allowed",
    ),
    ("cron schedule", ["--set", "report.schedule=every hour"], "/report/schedule"),
    ("report formats from the known set", ["--set-json", 'report.formats=["csv","xlsx"]'], "/report/formats/1"),
    ("report runs Spark in local mode", ["--set", "report.sparkMaster=spark://master:7077"], "/report/sparkMaster"),
    ("pods stay non-root", ["--set", "podSecurityContext.runAsNonRoot=false"], "/podSecurityContext/runAsNonRoot"),
    ("uid is not root", ["--set", "podSecurityContext.runAsUser=0"], "/podSecurityContext/runAsUser"),
    (
        "no privilege escalation",
        ["--set", "containerSecurityContext.allowPrivilegeEscalation=true"],
        "/containerSecurityContext/allowPrivilegeEscalation",
    ),
]

# Rules across values (templates/_validate.tpl): the whole message is ours.
CROSS_RULES = [
    (
        "existing cluster and own cluster at once",
        ["--set", "kafka.bootstrapServers=kafka.example:9092"],
        "kafka.bootstrapServers is set (kafka.example:9092), so the workloads use an existing cluster: "
        "set kafka.enabled=false",
    ),
    ("no cluster at all", ["--set", "kafka.enabled=false"], "kafka.enabled=false needs kafka.bootstrapServers"),
    (
        "security on the chart's plain cluster",
        ["--set", "kafka.security.protocol=SSL"],
        "kafka.security.protocol=SSL applies to an existing cluster",
    ),
    (
        "SASL without mechanism",
        [
            "--set",
            "kafka.enabled=false",
            "--set",
            "kafka.bootstrapServers=k:9092",
            "--set",
            "kafka.security.protocol=SASL_SSL",
            "--set",
            "kafka.security.credentialsSecret.name=creds",
        ],
        "kafka.security.protocol=SASL_SSL needs kafka.security.saslMechanism",
    ),
    (
        "SASL without credentials Secret",
        [
            "--set",
            "kafka.enabled=false",
            "--set",
            "kafka.bootstrapServers=k:9092",
            "--set",
            "kafka.security.protocol=SASL_PLAINTEXT",
            "--set",
            "kafka.security.saslMechanism=PLAIN",
        ],
        "kafka.security.protocol=SASL_PLAINTEXT needs kafka.security.credentialsSecret.name",
    ),
    (
        "client certificate without key",
        [
            "--set",
            "kafka.enabled=false",
            "--set",
            "kafka.bootstrapServers=k:9092",
            "--set",
            "kafka.security.protocol=SSL",
            "--set",
            "kafka.security.tlsSecret.name=tls",
            "--set",
            "kafka.security.tlsSecret.certKey=tls.crt",
        ],
        "certKey and keyKey go together",
    ),
    (
        "TLS Secret without a TLS protocol",
        [
            "--set",
            "kafka.enabled=false",
            "--set",
            "kafka.bootstrapServers=k:9092",
            "--set",
            "kafka.security.tlsSecret.name=tls",
        ],
        "kafka.security.tlsSecret.name is set but kafka.security.protocol=PLAINTEXT does not use TLS",
    ),
    (
        "more topic replicas than brokers",
        ["--set", "topics.input.replicas=3"],
        "topics.input.replicas=3 exceeds kafka.replicas=1",
    ),
    (
        "liveness shorter than the gap between readings",
        ["--set-json", "producer.rate=0.01"],
        "producer.heartbeatMaxAgeSeconds=60 is not longer than the gap between readings at producer.rate=0.01/s",
    ),
]


def _render_error(helm, sets):
    done = run_helm(helm, *template_args([]), *sets)
    assert done.returncode != 0, f"helm template accepted {sets}"
    return done.stderr


@pytest.mark.parametrize("rule,sets,message", SCHEMA_RULES, ids=[r[0] for r in SCHEMA_RULES])
def test_schema_rejects(helm, rule, sets, message):
    error = _render_error(helm, sets)
    assert "values don't meet the specifications of the schema" in error
    assert message in error, error


@pytest.mark.parametrize("rule,sets,message", CROSS_RULES, ids=[r[0] for r in CROSS_RULES])
def test_cross_value_rule_rejects(helm, rule, sets, message):
    assert message in _render_error(helm, sets)


@pytest.mark.parametrize(
    "sets",
    [
        [
            "--set",
            "kafka.enabled=false",
            "--set",
            "kafka.bootstrapServers=a:9092\\,b:9092",
            "--set",
            "kafka.manageTopics=false",
        ],
        ["--set", "producer.rate=0", "--set", "producer.seed=42", "--set", "stream.slide=30 seconds"],
        ["--set-json", 'stream.sinks=["console","kafka","parquet"]', "--set", "stream.maxOffsetsPerTrigger=5000"],
        ["--set", "kafka.replicas=3", "--set", "topics.input.replicas=3", "--set", "report.schedule=@hourly"],
    ],
    ids=["existing-cluster", "fast-producer-seeded-sliding", "all-sinks-capped", "three-nodes"],
)
def test_good_values_render(helm, sets):
    done = run_helm(helm, *template_args([]), *sets)
    assert done.returncode == 0, done.stderr
