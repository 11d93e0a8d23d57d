package rtap.spark;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.UUID;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.function.FlatMapFunction;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow;
import org.apache.spark.sql.catalyst.expressions.UnsafeProjection;
import org.apache.spark.sql.catalyst.expressions.UnsafeRow;
import org.apache.spark.sql.execution.streaming.state.NoPrefixKeyStateEncoderSpec;
import org.apache.spark.sql.execution.streaming.state.StateStore;
import org.apache.spark.sql.execution.streaming.state.StateStoreConf;
import org.apache.spark.sql.execution.streaming.state.StateStoreId;
import org.apache.spark.sql.execution.streaming.state.StateStoreProviderId;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.unsafe.types.UTF8String;
import org.apache.spark.util.SerializableConfiguration;
import scala.Option;

/**
 * PROBE, reverted right after it was committed (bench/limits.md, "the deduplication in
 * foreachBatch"): the deduplication's state kept outside Spark's stateful operators, in the
 * stream's foreachBatch. Narrow rows (key, digest, partition, offset) are shuffled by key; each
 * task opens Spark's state store (RocksDB) of its partition at version = the batch id (so a
 * replayed batch loads the same state), decides, commits, and returns the coordinates of the
 * rejected rows (a copy, or a conflicting version). The expiry ({@code mode}): 0 none; 1 an
 * index of the keys by expiry in a second column family, evicted by a range scan (what
 * transformWithState's time to live does); 2 generations: a column family per horizon of
 * processing time, looked up in the current and the previous one, the one before dropped
 * whole. Not done, as a probe: the batch's time from the offset log (here the wall clock),
 * the contract's event-time bounds, the conflicting versions' dead letters, the checkpoint's
 * own partition count. Each task prints its timings to stderr.
 */
public final class BatchState {
  private BatchState() {}

  static final StructType KEY =
      new StructType().add("key", DataTypes.StringType, false);
  static final StructType VALUE =
      new StructType()
          .add("digest", DataTypes.LongType, false)
          .add("seen_ms", DataTypes.LongType, false);
  static final StructType INDEX =
      new StructType()
          .add("expires_ms", DataTypes.LongType, false)
          .add("key", DataTypes.StringType, false);
  static final StructType NOTHING = new StructType().add("x", DataTypes.LongType, false);
  static final String BY_EXPIRY = "by_expiry";
  static final StructType OUT =
      new StructType()
          .add("r_partition", DataTypes.IntegerType, false)
          .add("r_offset", DataTypes.LongType, false)
          .add("r_conflict", DataTypes.BooleanType, false);

  public static Dataset<Row> decide(
      Dataset<Row> narrow,
      String checkpoint,
      long version,
      int parts,
      long nowMs,
      long horizonMs,
      String runId,
      int mode) {
    SparkSession spark = narrow.sparkSession();
    final StateStoreConf conf =
        new StateStoreConf(
            spark.sessionState().conf(),
            scala.collection.immutable.Map$.MODULE$.<String, String>empty());
    final SerializableConfiguration hadoop =
        new SerializableConfiguration(spark.sessionState().newHadoopConf());
    final UUID run = UUID.fromString(runId);
    Dataset<Row> shuffled = narrow.repartition(parts, narrow.col(narrow.columns()[0]));
    List<Row> out =
        shuffled
            .javaRDD()
            .mapPartitions(
                (FlatMapFunction<Iterator<Row>, Row>)
                    it -> resolve(it, checkpoint, version, nowMs, horizonMs, conf, hadoop, run, mode))
            .collect();
    return spark.createDataFrame(out, OUT);
  }

  private static Iterator<Row> resolve(
      Iterator<Row> it,
      String checkpoint,
      long version,
      long nowMs,
      long horizonMs,
      StateStoreConf conf,
      SerializableConfiguration hadoop,
      UUID run,
      int mode) {
    long t0 = System.nanoTime();
    List<Row> rows = new ArrayList<>();
    it.forEachRemaining(rows::add);
    long t1 = System.nanoTime();
    Row[] sorted = rows.toArray(new Row[0]);
    Arrays.sort(
        sorted,
        (a, b) -> {
          int c = Integer.compare(a.getInt(2), b.getInt(2));
          return c != 0 ? c : Long.compare(a.getLong(3), b.getLong(3));
        });
    int pid = TaskContext.getPartitionId();
    StateStoreProviderId id =
        new StateStoreProviderId(
            new StateStoreId(checkpoint, 0L, pid, StateStoreId.DEFAULT_STORE_NAME()), run);
    StateStore store =
        org.apache.spark.sql.execution.streaming.state.StateStore$.MODULE$.get(
            id,
            KEY,
            VALUE,
            new NoPrefixKeyStateEncoderSpec(KEY),
            version,
            Option.<String>empty(),
            Option.<org.apache.spark.sql.execution.streaming.state.StateSchemaBroadcast>empty(),
            true,
            conf,
            hadoop.value(),
            false);
    long gen = nowMs / horizonMs;
    String cur = "gen" + gen;
    String prev = "gen" + (gen - 1);
    if (mode == 2) {
      store.createColFamilyIfAbsent(cur, KEY, VALUE, new NoPrefixKeyStateEncoderSpec(KEY), false, false);
      store.createColFamilyIfAbsent(prev, KEY, VALUE, new NoPrefixKeyStateEncoderSpec(KEY), false, false);
      store.removeColFamilyIfExists("gen" + (gen - 2));
    }
    store.createColFamilyIfAbsent(
        BY_EXPIRY,
        INDEX,
        NOTHING,
        org.apache.spark.sql.execution.streaming.state.RangeKeyScanStateEncoderSpec.apply(
            INDEX,
            scala.jdk.javaapi.CollectionConverters.asScala(List.<Object>of(0)).toList()),
        false,
        false);
    String cf = org.apache.spark.sql.execution.streaming.state.StateStore$.MODULE$.DEFAULT_COL_FAMILY_NAME();
    UnsafeProjection keyP = UnsafeProjection.create(KEY);
    UnsafeProjection valP = UnsafeProjection.create(VALUE);
    UnsafeProjection idxP = UnsafeProjection.create(INDEX);
    UnsafeRow nothing =
        UnsafeProjection.create(NOTHING).apply(new GenericInternalRow(new Object[] {0L})).copy();
    List<Row> out = new ArrayList<>();
    try {
      long expired = 0;
      org.apache.spark.sql.execution.streaming.state.StateStoreIterator<
              org.apache.spark.sql.execution.streaming.state.UnsafeRowPair>
          idx = store.iterator(BY_EXPIRY);
      try {
        while (mode == 1 && idx.hasNext()) {
          org.apache.spark.sql.execution.streaming.state.UnsafeRowPair p = idx.next();
          long exp = p.key().getLong(0);
          if (exp > nowMs) {
            break;
          }
          UnsafeRow k =
              keyP.apply(new GenericInternalRow(new Object[] {p.key().getUTF8String(1).clone()}))
                  .copy();
          UnsafeRow ik = p.key().copy();
          UnsafeRow v = store.get(k, cf);
          if (v != null && v.getLong(1) + horizonMs == exp) {
            store.remove(k, cf);
          }
          store.remove(ik, BY_EXPIRY);
          expired++;
        }
      } finally {
        idx.close();
      }
      for (Row r : sorted) {
        UnsafeRow key =
            keyP.apply(new GenericInternalRow(new Object[] {UTF8String.fromString(r.getString(0))}));
        long digest = r.getLong(1);
        UnsafeRow v;
        if (mode == 2) {
          v = store.get(key, cur);
          if (v == null) {
            v = store.get(key, prev);
          }
        } else {
          v = store.get(key, cf);
        }
        if (v == null || v.getLong(1) + horizonMs <= nowMs) {
          if (mode == 2) {
            store.put(key, valP.apply(new GenericInternalRow(new Object[] {digest, nowMs})), cur);
            continue;
          }
          InternalRow nv = new GenericInternalRow(new Object[] {digest, nowMs});
          store.put(key, valP.apply(nv), cf);
          if (mode == 1) store.put(
              idxP.apply(
                  new GenericInternalRow(
                      new Object[] {nowMs + horizonMs, UTF8String.fromString(r.getString(0))})),
              nothing,
              BY_EXPIRY);
        } else {
          out.add(RowFactory.create(r.getInt(2), r.getLong(3), v.getLong(0) != digest));
        }
      }
      long t2 = System.nanoTime();
      store.commit();
      long t3 = System.nanoTime();
      System.err.println(
          String.format(
              "PROBE state task %d: %d rows, input %.2fs, state %.2fs, commit %.2fs",
              TaskContext.getPartitionId(), rows.size(), (t1 - t0) / 1e9, (t2 - t1) / 1e9,
              (t3 - t2) / 1e9));
    } catch (RuntimeException e) {
      store.abort();
      throw e;
    }
    return out.iterator();
  }
}
