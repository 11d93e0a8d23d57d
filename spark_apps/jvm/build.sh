#!/usr/bin/env bash
# Build the stream's JVM operators (spark_apps/jvm/rtap/...) into one jar, compiled against
# the Spark jars that pyspark ships (no download). Used by `python -m devstack install` and by
# docker/airflow.Dockerfile.
#   spark_apps/jvm/build.sh OUT_JAR PYTHON
set -euo pipefail
out=$1
python=${2:-python3}
here=$(cd "$(dirname "$0")" && pwd)
spark_jars=$("$python" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')
classes=$(mktemp -d)
trap 'rm -rf "$classes"' EXIT
"${JAVA_HOME:+$JAVA_HOME/bin/}javac" -Xlint:all,-path -Werror --release 17 -cp "$spark_jars/*" -d "$classes" \
  $(find "$here/rtap" -name '*.java' | sort)
mkdir -p "$(dirname "$out")"
"${JAVA_HOME:+$JAVA_HOME/bin/}jar" --create --file "$out.$$.tmp" -C "$classes" .
mv "$out.$$.tmp" "$out"
