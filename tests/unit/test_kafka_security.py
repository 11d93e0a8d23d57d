"""Kafka client security: the connection's librdkafka settings -> the Java client's options."""

from __future__ import annotations

import pytest

from include.kafka.security import (
    KafkaSecurityError,
    client_config,
    env_from_client_config,
    spark_options,
)

SCRAM = {
    "bootstrap.servers": "b1:9093",
    "security.protocol": "SASL_SSL",
    "sasl.mechanisms": "SCRAM-SHA-512",
    "sasl.username": "stream",
    "sasl.password": 'p"a\\ss',
}


def test_plaintext_needs_no_options():
    assert env_from_client_config({"bootstrap.servers": "b:9092"}) == {}
    assert spark_options({}) == {}
    assert spark_options({"RTAP_KAFKA_SECURITY_PROTOCOL": "plaintext"}) == {}


def test_scram_over_tls_becomes_a_jaas_line_and_an_inline_pem_truststore(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    env = env_from_client_config({**SCRAM, "ssl.ca.location": str(ca)})
    assert "bootstrap.servers" not in str(env)
    assert env["RTAP_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    options = spark_options(env)
    assert options["kafka.security.protocol"] == "SASL_SSL"
    assert options["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert options["kafka.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="stream" password="p\\"a\\\\ss";'
    )
    assert options["kafka.ssl.truststore.type"] == "PEM"
    assert options["kafka.ssl.truststore.certificates"] == ca.read_text()
    # And back to librdkafka for Python clients of an app.
    assert client_config(env)["sasl.password"] == SCRAM["sasl.password"]
    assert client_config(env)["sasl.mechanism"] == "SCRAM-SHA-512"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RTAP_KAFKA_SECURITY_PROTOCOL": "SASL_TLS"}, "RTAP_KAFKA_SECURITY_PROTOCOL"),
        (
            {"RTAP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "RTAP_KAFKA_SASL_MECHANISM": "GSSAPI"},
            "RTAP_KAFKA_SASL_MECHANISM",
        ),
        (
            {
                "RTAP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "RTAP_KAFKA_SASL_MECHANISM": "PLAIN",
                "RTAP_KAFKA_SASL_USERNAME": "u",
            },
            "RTAP_KAFKA_SASL_PASSWORD",
        ),
        (
            {"RTAP_KAFKA_SECURITY_PROTOCOL": "SSL", "RTAP_KAFKA_SSL_CA_LOCATION": "/nope.pem"},
            "RTAP_KAFKA_SSL_CA_LOCATION",
        ),
    ],
)
def test_a_wrong_setting_is_named(env, named):
    with pytest.raises(KafkaSecurityError, match=named):
        spark_options(env)
