# Airflow 3.3.2 with our providers, Java 17 and spark-submit (pyspark), for docker-compose.yaml.
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jdk-headless maven \
 && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64

USER airflow
COPY --chown=airflow:root requirements.lock /opt/rtap/requirements.lock
RUN pip install --no-cache-dir --require-hashes -r /opt/rtap/requirements.lock \
 && pip install --no-cache-dir --force-reinstall --no-deps \
      "$(grep -E '^pyspark==' /opt/rtap/requirements.lock | cut -d' ' -f1)"

# Spark connector jars resolved at build time, so jobs never download at run time.
COPY --chown=airflow:root devstack/maven /opt/rtap/maven
RUN RTAP_MAVEN_REPO=https://repo.maven.apache.org/maven2 mvn -B -q -s /opt/rtap/maven/settings.xml \
      -f /opt/rtap/maven/spark-connectors.pom.xml dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory=/opt/rtap/jars
# The stream's own JVM operators, compiled against the image's pyspark jars.
COPY --chown=airflow:root spark_apps/jvm /opt/rtap/jvm
RUN bash /opt/rtap/jvm/build.sh /opt/rtap/jars/rtap-operators.jar python
ENV PYTHONPATH=/opt/airflow
