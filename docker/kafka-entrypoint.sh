#!/bin/bash
# Compose's Kafka with authentication on by default: SASL/SCRAM-SHA-512 for clients and
# between brokers, SASL/PLAIN between brokers and controllers (KRaft keeps SCRAM credentials in
# its metadata, so controllers cannot use SCRAM among themselves). Wraps the apache/kafka
# image's own start script (/etc/kafka/docker/run), which renders server.properties from the
# KAFKA_* variables and formats the storage when it is empty.
#
# Before that, this script:
#   1. writes the broker's logins into a private JAAS file (0600) named by KAFKA_OPTS, so no
#      password is in the broker's environment or on its command line;
#   2. formats the storage once with the SCRAM users (the broker's own and the platform's
#      client, `rtap`): `kafka-storage format --add-scram`, the only way to have SCRAM users
#      before any broker answers. The StorageTool's arguments come from a private argument file
#      (`java @file`), so the passwords never reach argv either;
#   3. writes the healthcheck's client settings (RTAP_KAFKA_DIR/client.properties).
# Then it drops both passwords from the environment and hands over to the image.
# tests/integration/test_compose_kafka.py runs this script with the compose file's settings
# on a real broker.
set -euo pipefail

KAFKA_HOME="${KAFKA_HOME:-/opt/kafka}"
LAUNCH="${RTAP_KAFKA_LAUNCH:-/etc/kafka/docker/run}"
DIR="${RTAP_KAFKA_DIR:-/tmp/rtap-kafka}"
BROKER_USER=broker
CLIENT_USER="${RTAP_KAFKA_CLIENT_USER:-rtap}"

fail() { echo "kafka-entrypoint: $*" >&2; exit 2; }
for name in RTAP_KAFKA_BROKER_PASSWORD RTAP_KAFKA_CLIENT_PASSWORD CLUSTER_ID KAFKA_LOG_DIRS \
  KAFKA_NODE_ID KAFKA_PROCESS_ROLES KAFKA_CONTROLLER_QUORUM_VOTERS KAFKA_LISTENERS; do
  [ -n "${!name:-}" ] || fail "$name is not set"
done
# The SCRAM argument splits on commas; the JAAS file and the argument file quote values.
unsafe="[,\"'\\[:space:]]"
for name in RTAP_KAFKA_BROKER_PASSWORD RTAP_KAFKA_CLIENT_PASSWORD; do
  if [[ "${!name}" =~ $unsafe ]]; then
    fail "$name (${name#RTAP_} in .env) may not hold a comma, a quote, a backslash or white space"
  fi
done

umask 077
rm -rf "$DIR"
mkdir -p "$DIR"

# The broker's logins: SCRAM as `broker` on the SASL_PLAINTEXT listener (to other brokers),
# PLAIN as `broker` on the CONTROLLER listener, where it is also the one user a controller
# accepts (user_broker).
cat > "$DIR/jaas.conf" <<EOF
sasl_plaintext.KafkaServer {
  org.apache.kafka.common.security.scram.ScramLoginModule required
  username="$BROKER_USER" password="$RTAP_KAFKA_BROKER_PASSWORD";
};
controller.KafkaServer {
  org.apache.kafka.common.security.plain.PlainLoginModule required
  username="$BROKER_USER" password="$RTAP_KAFKA_BROKER_PASSWORD"
  user_$BROKER_USER="$RTAP_KAFKA_BROKER_PASSWORD";
};
EOF

# The healthcheck's client (the broker's own SCRAM user).
cat > "$DIR/client.properties" <<EOF
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$BROKER_USER" password="$RTAP_KAFKA_BROKER_PASSWORD";
EOF

if [ ! -e "$KAFKA_LOG_DIRS/meta.properties" ]; then
  # The broker's configuration as the image renders it from the KAFKA_* variables (its
  # kafka-propertiesSpec.json: launcher options excluded; KAFKA_ dropped, lower case,
  # ___ -> -, __ -> _, _ -> .), so the StorageTool validates what the broker will run.
  for var in $(compgen -e | grep '^KAFKA_'); do
    case "$var" in
      KAFKA_VERSION|KAFKA_HEAP_OPT*|KAFKA_LOG4J_*|KAFKA_OPTS|KAFKA_JMX_OPTS|KAFKA_HOME) continue ;;
      KAFKA_JVM_PERFORMANCE_OPTS|KAFKA_GC_LOG_OPTS|KAFKA_TOOLS_LOG4J_LOGLEVEL) continue ;;
    esac
    key="${var#KAFKA_}"; key="${key,,}"; key="${key//___/-}"
    key="${key//__/$'\x01'}"; key="${key//_/.}"; key="${key//$'\x01'/_}"
    printf '%s=%s\n' "$key" "${!var}"
  done > "$DIR/format.properties"
  cat > "$DIR/format.args" <<EOF
kafka.tools.StorageTool format --ignore-formatted --cluster-id $CLUSTER_ID --config $DIR/format.properties
--add-scram SCRAM-SHA-512=[name=$BROKER_USER,password=$RTAP_KAFKA_BROKER_PASSWORD,iterations=8192]
--add-scram SCRAM-SHA-512=[name=$CLIENT_USER,password=$RTAP_KAFKA_CLIENT_PASSWORD,iterations=8192]
EOF
  # Its output lists the users' salted keys: only the last line (the formatted directory).
  if ! out=$("${JAVA_HOME:+$JAVA_HOME/bin/}java" -cp "$KAFKA_HOME/libs/*" @"$DIR/format.args" 2>&1); then
    rm -f "$DIR/format.args"
    echo "$out" | grep -v -e 'password=' -e 'storedKey=' >&2
    fail "formatting $KAFKA_LOG_DIRS with the SCRAM users failed"
  fi
  rm -f "$DIR/format.args"
  echo "kafka-entrypoint: $(echo "$out" | tail -n 1) (SCRAM users: $BROKER_USER, $CLIENT_USER)"
fi

export KAFKA_OPTS="-Djava.security.auth.login.config=$DIR/jaas.conf${KAFKA_OPTS:+ $KAFKA_OPTS}"
unset RTAP_KAFKA_BROKER_PASSWORD RTAP_KAFKA_CLIENT_PASSWORD
exec "$LAUNCH" "$@"
