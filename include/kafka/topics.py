"""Kafka topics as code: load the declaration, compare it with the broker, apply safe changes.

``plan()`` is pure (declaration + observed state -> actions), so its rules are unit-tested
without a broker; ``provision()`` observes the broker through a confluent-kafka AdminClient
(the one the Airflow Kafka provider's hook exposes) and applies the plan.

Safe: create a missing topic with its config; change a config; add partitions (with a
warning: keys move to other partitions, so per-key order breaks across the change).
Refused: fewer partitions, a different replication factor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

DECLARATION = Path(__file__).resolve().parent.parent / "topics.yaml"
_TOPIC_KEYS = {"description", "partitions", "replication_factor", "config"}


class TopicDeclarationError(ValueError):
    """The declaration file is broken; the message names file, topic and key."""


class UnsafeTopicChange(RuntimeError):
    """The broker differs from the declaration in a way we refuse to fix automatically."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class Observed:
    partitions: int
    replication_factor: int
    config: dict[str, str]


@dataclass
class Plan:
    create: list[TopicSpec] = field(default_factory=list)
    alter_config: dict[str, dict[str, tuple[str | None, str]]] = field(default_factory=dict)
    add_partitions: dict[str, tuple[int, int]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return bool(self.create or self.alter_config or self.add_partitions)

    def summary(self) -> str:
        lines = [
            f"create {t.name} ({t.partitions} partitions, rf {t.replication_factor})"
            for t in self.create
        ]
        for topic, diffs in self.alter_config.items():
            for key, (old, new) in diffs.items():
                lines.append(f"alter {topic}: {key} {old!r} -> {new!r}")
        for topic, (old, new) in self.add_partitions.items():
            lines.append(
                f"add partitions {topic}: {old} -> {new} (per-key order changes for moved keys)"
            )
        lines += [f"REFUSED {r}" for r in self.refused]
        lines += [f"unchanged {t}" for t in self.unchanged]
        return "\n".join(lines)


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TopicDeclarationError(f"{where}: expected a positive integer, got {value!r}")
    return value


def load(path: Path = DECLARATION) -> list[TopicSpec]:
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TopicDeclarationError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("topics"), dict) or not doc["topics"]:
        raise TopicDeclarationError(f"{path}: expected a mapping `topics:` with at least one topic")
    unknown_top = set(doc) - {"topics"}
    if unknown_top:
        raise TopicDeclarationError(f"{path}: unknown top-level key(s) {sorted(unknown_top)}")
    specs = []
    for name, body in doc["topics"].items():
        where = f"{path}: topic {name!r}"
        if not isinstance(body, dict):
            raise TopicDeclarationError(f"{where}: expected a mapping")
        unknown = set(body) - _TOPIC_KEYS
        if unknown:
            raise TopicDeclarationError(
                f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOPIC_KEYS)}"
            )
        for required in ("partitions", "replication_factor"):
            if required not in body:
                raise TopicDeclarationError(f"{where}: missing key {required!r}")
        config = body.get("config") or {}
        if not isinstance(config, dict):
            raise TopicDeclarationError(f"{where}, key 'config': expected a mapping")
        for key, value in config.items():
            if isinstance(value, dict | list) or value is None:
                raise TopicDeclarationError(
                    f"{where}, key 'config.{key}': expected a scalar, got {value!r}"
                )
        specs.append(
            TopicSpec(
                name=str(name),
                partitions=_positive_int(body["partitions"], f"{where}, key 'partitions'"),
                replication_factor=_positive_int(
                    body["replication_factor"], f"{where}, key 'replication_factor'"
                ),
                config={
                    str(k): str(v).lower() if isinstance(v, bool) else str(v)
                    for k, v in config.items()
                },
                description=str(body.get("description", "")),
            )
        )
    return specs


def plan(specs: list[TopicSpec], observed: Mapping[str, Observed]) -> Plan:
    result = Plan()
    for spec in specs:
        seen = observed.get(spec.name)
        if seen is None:
            result.create.append(spec)
            continue
        if seen.replication_factor != spec.replication_factor:
            result.refused.append(
                f"{spec.name}: replication_factor is {seen.replication_factor} on the broker, "
                f"{spec.replication_factor} declared (reassign replicas by hand)"
            )
        if spec.partitions < seen.partitions:
            result.refused.append(
                f"{spec.name}: partitions is {seen.partitions} on the broker, {spec.partitions} "
                "declared (Kafka cannot remove partitions)"
            )
        elif spec.partitions > seen.partitions:
            result.add_partitions[spec.name] = (seen.partitions, spec.partitions)
        diffs = {
            k: (seen.config.get(k), v) for k, v in spec.config.items() if seen.config.get(k) != v
        }
        if diffs:
            result.alter_config[spec.name] = diffs
        if (
            spec.name not in result.add_partitions
            and not diffs
            and not any(r.startswith(f"{spec.name}:") for r in result.refused)
        ):
            result.unchanged.append(spec.name)
    return result


def observe(admin, names: list[str], timeout: float = 15.0) -> dict[str, Observed]:
    """Partitions, replication factor and configs of the ``names`` that exist."""
    from confluent_kafka.admin import ConfigResource, ResourceType

    md = admin.list_topics(timeout=timeout)
    present = [n for n in names if n in md.topics and md.topics[n].error is None]
    if not present:
        return {}
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in present])
    configs = {
        res.name: {k: e.value for k, e in fut.result(timeout).items()}
        for res, fut in futures.items()
    }
    result = {}
    for n in present:
        parts = md.topics[n].partitions
        rf = len(next(iter(parts.values())).replicas) if parts else 0
        result[n] = Observed(
            partitions=len(parts), replication_factor=rf, config=configs.get(n, {})
        )
    return result


def apply(admin, p: Plan, timeout: float = 30.0) -> None:
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        NewTopic,
        ResourceType,
    )

    if p.refused:
        raise UnsafeTopicChange("refusing unsafe topic changes:\n" + "\n".join(p.refused))
    if p.create:
        new = [
            NewTopic(
                t.name,
                num_partitions=t.partitions,
                replication_factor=t.replication_factor,
                config=t.config,
            )
            for t in p.create
        ]
        for name, fut in admin.create_topics(new, request_timeout=timeout).items():
            fut.result(timeout)
            log.info("created topic %s", name)
    if p.add_partitions:
        for topic, (old, new_count) in p.add_partitions.items():
            log.warning(
                "topic %s: %s -> %s partitions; keys hashed to new partitions lose "
                "ordering relative to their earlier events",
                topic,
                old,
                new_count,
            )
        reqs = [NewPartitions(t, n) for t, (_, n) in p.add_partitions.items()]
        for _name, fut in admin.create_partitions(reqs, request_timeout=timeout).items():
            fut.result(timeout)
    if p.alter_config:
        resources = [
            ConfigResource(
                ResourceType.TOPIC,
                topic,
                incremental_configs=[
                    ConfigEntry(k, new, incremental_operation=AlterConfigOpType.SET)
                    for k, (_, new) in diffs.items()
                ],
            )
            for topic, diffs in p.alter_config.items()
        ]
        for res, fut in admin.incremental_alter_configs(resources).items():
            fut.result(timeout)
            log.info("aligned config of topic %s", res.name)


class TopicsNotConverged(RuntimeError):
    """The broker acknowledged the changes but does not show them within the timeout."""


def await_converged(admin, specs: list[TopicSpec], timeout: float = 30.0) -> None:
    """Wait until the broker *shows* the declared state.

    Kafka acknowledges a config change once the controller committed it; a broker applies it
    when it replays the metadata log, so a describe right after the ack can still return the
    old value (seen in CI). A provisioning task that returns must leave a broker that already
    serves the declared topics, so it polls until a fresh plan is empty.
    """
    deadline = time.monotonic() + timeout
    while True:
        pending = plan(specs, observe(admin, [s.name for s in specs]))
        if not pending.changes:
            return
        if time.monotonic() >= deadline:
            raise TopicsNotConverged(
                f"broker still differs from the declaration after {timeout:.0f}s:\n"
                + pending.summary()
            )
        time.sleep(0.2)


def provision(admin, path: Path = DECLARATION, timeout: float = 30.0) -> Plan:
    """Make the broker match the declaration; returns the plan that was applied.

    Returns once the broker serves the declared state (see ``await_converged``).
    """
    specs = load(path)
    p = plan(specs, observe(admin, [s.name for s in specs]))
    log.info("topic plan:\n%s", p.summary())
    apply(admin, p, timeout=timeout)
    if p.changes:
        await_converged(admin, specs, timeout=timeout)
    return p
