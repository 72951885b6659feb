"""Topics as the Helm chart defines them, created on any broker.

`charts/sensorstream/values.yaml` (`topics:`) is the one definition of topic names, partitions,
replicas and config: the chart renders it as Strimzi KafkaTopics, and this module creates the same
topics on the local broker, with replicas capped to the number of brokers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from sensorstream.brokers import admin_client
from sensorstream.config import Settings, default_values_file, load_settings
from sensorstream.errors import ConfigError

#: values.yaml key -> the setting that carries that topic's name to the jobs
TOPIC_ROLES = {
    "input": "input_topic",
    "output": "output_topic",
    "deadLetter": "dead_letter_topic",
    "alerts": "alerts_topic",
}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 1
    replicas: int = 1
    config: Mapping[str, str] = field(default_factory=dict)


def specs_from_values(values_file: Path | None = None, max_replicas: int | None = None) -> dict[str, TopicSpec]:
    """{role: TopicSpec} from the chart's values (roles: input, output, deadLetter, alerts; a role
    the file leaves out is left out)."""
    path = Path(values_file or default_values_file())
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        topics = values["topics"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise ConfigError("values file", "SENSORSTREAM_VALUES_FILE", f"cannot read topics from {path}: {exc}") from None
    specs = {}
    for role in TOPIC_ROLES:
        if role not in topics:  # a values file from before a role (alerts) names none: nothing to create
            continue
        entry = topics.get(role) or {}
        if not entry.get("name"):
            raise ConfigError("values file", "SENSORSTREAM_VALUES_FILE", f"topics.{role} in {path} has no name")
        replicas = int(entry.get("replicas", 1))
        specs[role] = TopicSpec(
            name=str(entry["name"]),
            partitions=int(entry.get("partitions", 1)),
            replicas=min(replicas, max_replicas) if max_replicas else replicas,
            config={str(k): str(v) for k, v in (entry.get("config") or {}).items()},
        )
    return specs


def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], settings: Settings | None = None) -> list[str]:
    """Create the topics that do not exist yet; returns the names created. Idempotent."""
    settings = (settings or load_settings()).replace(bootstrap_servers=bootstrap)
    specs = list(specs)
    created = []
    with admin_client(settings) as admin:
        present = set(admin.list_topics())
        missing = [s for s in specs if s.name not in present]
        for spec in missing:
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            spec.name,
                            num_partitions=spec.partitions,
                            replication_factor=spec.replicas,
                            topic_configs=dict(spec.config),
                        )
                    ]
                )
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass
    return created
