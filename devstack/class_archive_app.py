"""The training run of devstack/class_archive.py: local Spark work that loads the classes a
driver of the platform loads (SQL, codegen, Parquet, JSON, windows, a stateful streaming query
on the RocksDB state store with a file sink and foreachBatch, an Iceberg table), and the
clients of the services the apps call (S3A and the AWS SDK, Kafka's consumer, the Postgres
JDBC driver) pointed at a closed local port. It needs no service: each client fails fast."""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from include.endpoints import PostgresEndpoint, S3Endpoint


def main(scratch: Path) -> None:
    shutil.rmtree(scratch, ignore_errors=True)
    spark = (
        SparkSession.builder.appName("class-archive-training")
        .config("spark.sql.extensions", ICEBERG_EXTENSIONS)
        .config("spark.sql.catalog.train", "org.apache.iceberg.spark.SparkCatalog")
        .config("spark.sql.catalog.train.type", "hadoop")
        .config("spark.sql.catalog.train.warehouse", str(scratch / "warehouse"))
        .getOrCreate()
    )
    events = (
        spark.range(20_000)
        .withColumn("category", (F.col("id") % 7).cast("string"))
        .withColumn("price", F.rand(1) * 100)
        .withColumn("ts", F.timestamp_seconds(F.lit(1_700_000_000) + F.col("id")))
        .withColumn("body", F.to_json(F.struct("id", "category", "price")))
    )
    events.write.partitionBy("category").parquet(str(scratch / "batch"))
    back = spark.read.parquet(str(scratch / "batch"))
    parsed = back.select(F.from_json("body", "id long, category string, price double").alias("e"))
    (
        parsed.select("e.*")
        .dropDuplicates(["id"])
        .groupBy(F.window(F.timestamp_seconds("id"), "1 minute"), "category")
        .agg(F.sum("price"), F.approx_count_distinct("id"), F.count("*"))
        .collect()
    )

    def each_batch(frame, batch_id: int) -> None:
        frame.groupBy("category").count().collect()

    stream = (
        spark.readStream.schema(back.schema)
        .option("maxFilesPerTrigger", 4)
        .parquet(str(scratch / "batch"))
        .withWatermark("ts", "1 minute")
        .dropDuplicatesWithinWatermark(["id"])
    )
    queries = [
        stream.writeStream.format("parquet")
        .option("path", str(scratch / "sink"))
        .option("checkpointLocation", str(scratch / "checkpoints" / "sink"))
        .trigger(availableNow=True)
        .start(),
        stream.writeStream.foreachBatch(each_batch)
        .option("checkpointLocation", str(scratch / "checkpoints" / "fan"))
        .trigger(availableNow=True)
        .start(),
    ]
    for q in queries:
        q.awaitTermination()
    spark.read.parquet(str(scratch / "sink")).count()
    iceberg(spark, events)
    for client in (s3a, kafka, jdbc):
        with contextlib.suppress(Exception):  # expected: nothing listens on the port
            client(spark)
    spark.stop()
    shutil.rmtree(scratch, ignore_errors=True)


ICEBERG_EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
CLOSED_PORT = 1  # nothing listens there: each client loads its classes and fails fast
CLOSED = f"127.0.0.1:{CLOSED_PORT}"


def iceberg(spark: SparkSession, events) -> None:
    spark.sql("CREATE NAMESPACE IF NOT EXISTS train.db")
    frame = events.select("id", "category", "price", F.to_date("ts").alias("day"))
    frame.writeTo("train.db.events").using("iceberg").partitionedBy(F.col("day")).create()
    frame.writeTo("train.db.events").append()
    frame.sortWithinPartitions("category").writeTo("train.db.events").overwritePartitions()
    spark.table("train.db.events").groupBy("day").count().collect()
    spark.sql("SELECT * FROM train.db.events.snapshots").collect()


def s3a(spark: SparkSession) -> None:
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    closed = S3Endpoint(f"http://{CLOSED}", access_key="training", secret_key="training")
    settings = {
        **{k.removeprefix("spark.hadoop."): v for k, v in closed.s3a_conf().items()},
        **closed.hadoop_credentials(),
        "fs.s3a.path.style.access": "true",
        "fs.s3a.attempts.maximum": "1",
        "fs.s3a.retry.limit": "1",
        "fs.s3a.connection.establish.timeout": "1s",
    }
    for key, value in settings.items():
        conf.set(key, value)
    path = jvm.org.apache.hadoop.fs.Path("s3a://training/raw/")
    path.getFileSystem(conf).listStatus(path)


def kafka(spark: SparkSession) -> None:
    source = spark.readStream.format("kafka").option("kafka.bootstrap.servers", CLOSED)
    planned = source.option("subscribe", "training").load().select("value")
    assert planned.isStreaming  # the source's classes, planned, never started
    jvm = spark.sparkContext._jvm
    props = jvm.java.util.Properties()
    deserializer = "org.apache.kafka.common.serialization.ByteArrayDeserializer"
    for key, value in {
        "bootstrap.servers": CLOSED,
        "key.deserializer": deserializer,
        "value.deserializer": deserializer,
    }.items():
        props.setProperty(key, value)
    consumer = jvm.org.apache.kafka.clients.consumer.KafkaConsumer(props)
    try:
        consumer.listTopics(jvm.java.time.Duration.ofSeconds(2))
    finally:
        consumer.close()


def jdbc(spark: SparkSession) -> None:
    jvm = spark.sparkContext._jvm
    jvm.java.lang.Class.forName("org.postgresql.Driver")
    url = PostgresEndpoint(port=CLOSED_PORT, dbname="training").jdbc_url("public")
    jvm.java.sql.DriverManager.getConnection(url)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
