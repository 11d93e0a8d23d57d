"""Topics as code against the real broker: create, no-op, drift repair, unsafe refusal."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from include.kafka import topics


@pytest.fixture
def declared(ctx, tmp_path):
    name = f"it.topics.{uuid.uuid4().hex[:8]}"
    path = tmp_path / "topics.yaml"

    def write(partitions: int = 2, retention: int = 3_600_000, rf: int = 1) -> None:
        path.write_text(
            f"topics:\n  {name}:\n    partitions: {partitions}\n    replication_factor: {rf}\n"
            f"    config:\n      retention.ms: {retention}\n      cleanup.policy: delete\n"
            f"      max.message.bytes: 524288\n      min.insync.replicas: 1\n"
        )

    write()
    admin = AdminClient({"bootstrap.servers": ctx.settings.kafka_bootstrap})
    yield admin, name, path, write
    admin.delete_topics([name])[name].result(30)


def _until_visible(admin, name: str, key: str, value: str, timeout: float = 30.0) -> None:
    """A config change is acknowledged before the broker serves it (metadata log replay)."""
    deadline = time.monotonic() + timeout
    while topics.observe(admin, [name])[name].config.get(key) != value:
        assert time.monotonic() < deadline, f"{name}: {key} never became {value}"
        time.sleep(0.2)


def test_create_then_noop_then_repair_then_refuse(declared):
    admin, name, path, write = declared

    first = topics.provision(admin, path)
    assert [t.name for t in first.create] == [name]
    seen = topics.observe(admin, [name])[name]
    assert seen.partitions == 2 and seen.replication_factor == 1
    assert seen.config["retention.ms"] == "3600000" and seen.config["max.message.bytes"] == "524288"

    second = topics.provision(admin, path)
    assert not second.changes and second.unchanged == [name]

    # Someone changes a config by hand: detected and restored.
    res = ConfigResource(
        ResourceType.TOPIC,
        name,
        incremental_configs=[
            ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for fut in admin.incremental_alter_configs([res]).values():
        fut.result(30)
    _until_visible(admin, name, "retention.ms", "1000")
    third = topics.provision(admin, path)
    assert third.alter_config == {name: {"retention.ms": ("1000", "3600000")}}
    assert topics.observe(admin, [name])[name].config["retention.ms"] == "3600000"

    # More partitions are applied; fewer are refused with the topic and setting named.
    write(partitions=3)
    assert topics.provision(admin, path).add_partitions == {name: (2, 3)}
    write(partitions=1)
    with pytest.raises(topics.UnsafeTopicChange, match=f"{name}: partitions is 3"):
        topics.provision(admin, path)
