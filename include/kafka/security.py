"""Kafka client security for Spark's Kafka source, from the same settings as everything else.

The ``kafka_default`` Airflow connection holds librdkafka settings (its extra), which the
Airflow hooks and our Python clients use as they are. Spark's source runs the Java client, which
spells them differently (a JAAS line, a PEM truststore). :class:`LakeSparkSubmitOperator` passes
the connection's security settings to the driver as ``RTAP_KAFKA_*`` environment variables
(never on the command line, which Airflow logs and ``ps`` shows), and the streaming app turns
them into ``kafka.*`` options with :func:`spark_options`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

# librdkafka setting -> environment variable handed to the driver
ENV_VARS: dict[str, str] = {
    "security.protocol": "RTAP_KAFKA_SECURITY_PROTOCOL",
    "sasl.mechanism": "RTAP_KAFKA_SASL_MECHANISM",
    "sasl.username": "RTAP_KAFKA_SASL_USERNAME",
    "sasl.password": "RTAP_KAFKA_SASL_PASSWORD",
    "ssl.ca.location": "RTAP_KAFKA_SSL_CA_LOCATION",
}
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


class KafkaSecurityError(ValueError):
    """A Kafka security setting is missing or wrong; the message names it."""


def env_from_client_config(config: Mapping[str, object]) -> dict[str, str]:
    """The ``RTAP_KAFKA_*`` variables for a librdkafka config (``sasl.mechanisms`` accepted
    for ``sasl.mechanism``); empty for a plaintext config."""
    conf = dict(config)
    if "sasl.mechanisms" in conf and "sasl.mechanism" not in conf:
        conf["sasl.mechanism"] = conf.pop("sasl.mechanisms")
    return {var: str(conf[key]) for key, var in ENV_VARS.items() if conf.get(key) not in (None, "")}


def client_config(env: Mapping[str, str]) -> dict[str, str]:
    """The librdkafka settings back from the ``RTAP_KAFKA_*`` variables (Python clients of a
    Spark app, e.g. the dead-letter replay's producer)."""
    return {key: env[var] for key, var in ENV_VARS.items() if env.get(var)}


def _jaas_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def spark_options(env: Mapping[str, str]) -> dict[str, str]:
    """``kafka.*`` options of Spark's Kafka source for the ``RTAP_KAFKA_*`` variables in
    ``env``; empty when no security protocol is set (plaintext)."""
    protocol = env.get(ENV_VARS["security.protocol"], "").upper()
    if not protocol or protocol == "PLAINTEXT":
        return {}
    if protocol not in PROTOCOLS:
        raise KafkaSecurityError(
            f"{ENV_VARS['security.protocol']}={protocol!r} (security.protocol of the Kafka "
            f"connection): expected one of {', '.join(PROTOCOLS)}"
        )
    options = {"kafka.security.protocol": protocol}
    if protocol.startswith("SASL_"):
        mechanism = env.get(ENV_VARS["sasl.mechanism"], "").upper()
        if mechanism not in LOGIN_MODULES:
            raise KafkaSecurityError(
                f"{ENV_VARS['sasl.mechanism']}={mechanism!r} (sasl.mechanism of the Kafka "
                f"connection): expected one of {', '.join(LOGIN_MODULES)}"
            )
        for key in ("sasl.username", "sasl.password"):
            if not env.get(ENV_VARS[key]):
                raise KafkaSecurityError(
                    f"{ENV_VARS[key]} is empty: {protocol} needs {key} in the Kafka connection"
                )
        user = _jaas_quote(env[ENV_VARS["sasl.username"]])
        password = _jaas_quote(env[ENV_VARS["sasl.password"]])
        options["kafka.sasl.mechanism"] = mechanism
        options["kafka.sasl.jaas.config"] = (
            f"{LOGIN_MODULES[mechanism]} required username={user} password={password};"
        )
    ca = env.get(ENV_VARS["ssl.ca.location"])
    if protocol.endswith("SSL") and ca:
        path = Path(ca)
        if not path.is_file():
            raise KafkaSecurityError(
                f"{ENV_VARS['ssl.ca.location']}={ca!r} (ssl.ca.location of the Kafka "
                "connection): no such file"
            )
        # Inline PEM: executors on other hosts need no copy of the file.
        options["kafka.ssl.truststore.type"] = "PEM"
        options["kafka.ssl.truststore.certificates"] = path.read_text()
    return options
