package rtap.spark;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.Iterator;
import java.util.List;
import org.apache.spark.api.java.function.FlatMapGroupsWithStateFunction;
import org.apache.spark.api.java.function.MapFunction;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.KeyValueGroupedDataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.streaming.GroupState;
import org.apache.spark.sql.streaming.GroupStateTimeout;
import org.apache.spark.sql.streaming.OutputMode;
import org.apache.spark.sql.streaming.StatefulProcessor;
import org.apache.spark.sql.streaming.TTLConfig;
import org.apache.spark.sql.streaming.TimeMode;
import org.apache.spark.sql.streaming.TimerValues;
import org.apache.spark.sql.streaming.ValueState;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.util.LongAccumulator;
import scala.Tuple2;
import scala.jdk.javaapi.CollectionConverters;

/**
 * The stream's deduplication: the first record of each key within a horizon of processing time
 * is kept; a later record with the same key and the same content digest (a re-sent copy) is
 * dropped; one with the same key and a different digest is kept too, with its error column set
 * to the conflict reason, so that it is dead-lettered instead of silently dropped.
 *
 * <p>The operator is also where the micro-batch's processing time enters the data: Spark's
 * batch timestamp (the offset log's, so a replayed batch gets the same instant), which it writes
 * into the seen-at column of every output row and against which it applies the contract's
 * event-time bounds (too far ahead, too old: the error column set to their reason; such a
 * record keeps no state, as any dead letter). A {@code current_timestamp()} in the plan would
 * become a new literal in every batch's generated code: Spark would generate and compile the
 * stage's classes again for each micro-batch (~30 classes, a third of a small batch's CPU).
 *
 * <p>Records whose error column is already set (dead letters, keyed by their Kafka
 * coordinates) always pass and keep no state. Within one micro-batch, "first" means the lowest
 * (partition, offset). The Python side (spark_apps/transforms/events.py, first_seen) names the
 * columns and passes the bounds from the contract (include/events/contract.py).
 *
 * <p>Two operators apply these rules. The stream's is a {@code transformWithState} whose state
 * per key is the first version's digest with a time to live of the horizon: Spark indexes the
 * keys by expiry, so a batch evicts only the keys that expired. Its keys are the ids' bytes
 * ({@link #keyBytes}: a UUID in 16 bytes), or, in the checkpoints written before that, the id
 * strings. The other, the {@code flatMapGroupsWithState} of the earlier releases (state: digest,
 * first seen at; a processing-time timeout), serves the checkpoints it wrote: Spark finds that
 * operator's timed-out keys by reading every key of the state in every batch, a cost per event
 * of the horizon over the trigger interval (docs/architecture.md).
 *
 * <p>Why the JVM: Spark's Python stateful operators call Python once per key (and reach the
 * state through a socket), which costs more per record than the whole validator; here a key
 * costs a few microseconds. Spark's own dropDuplicatesWithinWatermark cannot say what it dropped.
 */
public final class FirstSeen {
  private FirstSeen() {}

  /** The event-time bounds of the contract, in milliseconds around the processing time. */
  public static final class Bounds implements java.io.Serializable {
    private static final long serialVersionUID = 1L;
    final String eventTimeColumn;
    final long maxAheadMs;
    final long maxAgeMs;
    final String reason;

    public Bounds(String eventTimeColumn, long maxAheadMs, long maxAgeMs, String reason) {
      this.eventTimeColumn = eventTimeColumn;
      this.maxAheadMs = maxAheadMs;
      this.maxAgeMs = maxAgeMs;
      this.reason = reason;
    }
  }

  /**
   * The deduplication in the state {@code layout} a checkpoint holds: {@link #KEY_BYTES} (new
   * checkpoints) or {@link #STRING_KEY}, a {@code transformWithState} (state: the first digest,
   * with a time to live); or {@link #LEGACY}, the earlier releases' {@code
   * flatMapGroupsWithState} (state: the first digest and when it was seen; a processing-time
   * timeout).
   *
   * <p>{@code rereads} (when not null) counts the records the operator dead-letters
   * (a conflicting version, an event time out of bounds) whose {@code rawValueColumn} is null:
   * the stream dropped their bytes before the shuffle and must read them again from the topic.
   * Read on the driver after a micro-batch's first job, it says whether the batch needs that
   * read at all (almost never), without a job to find out.
   */
  public static Dataset<Row> apply(
      Dataset<Row> rows,
      String keyColumn,
      String digestColumn,
      String seenMsColumn,
      String errorColumn,
      String partitionColumn,
      String offsetColumn,
      String conflictReason,
      long horizonMs,
      Bounds bounds,
      String layout,
      String rawValueColumn,
      LongAccumulator rereads) {
    StructType schema = rows.schema();
    Rules rules =
        new Rules(
            schema,
            digestColumn,
            seenMsColumn,
            errorColumn,
            partitionColumn,
            offsetColumn,
            conflictReason,
            bounds,
            rawValueColumn,
            rereads);
    final int key = schema.fieldIndex(keyColumn);
    switch (layout) {
      case KEY_BYTES:
        return withTtl(
            rows.groupByKey(
                (MapFunction<Row, byte[]>) r -> keyBytes(r.getString(key)), Encoders.BINARY()),
            new Processor<>(rules, horizonMs, KEY_BYTES),
            schema);
      case STRING_KEY:
        return withTtl(
            byString(rows, key), new Processor<>(rules, horizonMs, STRING_KEY), schema);
      case LEGACY:
        return byString(rows, key)
            .flatMapGroupsWithState(
                new Legacy(rules, horizonMs),
                OutputMode.Append(),
                Encoders.tuple(Encoders.LONG(), Encoders.LONG()),
                Encoders.row(schema),
                GroupStateTimeout.ProcessingTimeTimeout());
      default:
        throw new IllegalArgumentException("unknown deduplication state layout: " + layout);
    }
  }

  /**
   * The state layouts, each named as Spark's state metadata shows it (the state variable of a
   * {@code transformWithState}, or the operator's name). A checkpoint keeps the layout that wrote
   * it: Spark refuses a state whose key or value schema changed.
   */
  public static final String KEY_BYTES = "first_digest_by_id_bytes";

  /** The layout of 2026-12-04 to 12-06: the same operator, keyed by the id string. */
  public static final String STRING_KEY = "first_digest";

  /** The earlier releases' {@code flatMapGroupsWithState}. */
  public static final String LEGACY = "flatMapGroupsWithState";

  private static <K> Dataset<Row> withTtl(
      KeyValueGroupedDataset<K, Row> byKey, Processor<K> processor, StructType schema) {
    return byKey.transformWithState(
        processor, TimeMode.ProcessingTime(), OutputMode.Append(), Encoders.row(schema));
  }

  private static KeyValueGroupedDataset<String, Row> byString(Dataset<Row> rows, int key) {
    return rows.groupByKey((MapFunction<Row, String>) r -> r.getString(key), Encoders.STRING());
  }

  private static final byte TAG = (byte) 0xFF; // never in UTF-8

  /**
   * A key's bytes in the state: a canonical UUID (lower-case hex, as the generator and most
   * producers write it) as its 16 bytes; any other key as the tag byte 0xFF and its UTF-8
   * bytes, with a second tag at the end when that would make 16 bytes. One key, one encoding,
   * and no two keys share one: a 16-byte encoding is always a UUID's, and the others lose
   * nothing (UTF-8 never holds 0xFF). A 36-character id kept as a Java string costs ~56 bytes
   * in each of the state's two entries per id (the value and the expiry index); as 16 bytes the
   * state holds ~40 % fewer bytes per id (61 against 101 on local Spark: docs/architecture.md).
   */
  public static byte[] keyBytes(String key) {
    byte[] uuid = canonicalUuid(key);
    if (uuid != null) {
      return uuid;
    }
    byte[] utf8 = key.getBytes(java.nio.charset.StandardCharsets.UTF_8);
    byte[] out = new byte[1 + utf8.length + (utf8.length == 15 ? 1 : 0)];
    out[0] = TAG;
    System.arraycopy(utf8, 0, out, 1, utf8.length);
    if (utf8.length == 15) {
      out[16] = TAG;
    }
    return out;
  }

  private static byte[] canonicalUuid(String s) {
    if (s.length() != 36) {
      return null;
    }
    byte[] out = new byte[16];
    int j = 0;
    for (int i = 0; i < 36; ) {
      if (i == 8 || i == 13 || i == 18 || i == 23) {
        if (s.charAt(i) != '-') {
          return null;
        }
        i++;
        continue;
      }
      int hi = lowerHex(s.charAt(i));
      int lo = lowerHex(s.charAt(i + 1));
      if (hi < 0 || lo < 0) {
        return null;
      }
      out[j++] = (byte) ((hi << 4) | lo);
      i += 2;
    }
    return out;
  }

  private static int lowerHex(char c) {
    if (c >= '0' && c <= '9') {
      return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
      return c - 'a' + 10;
    }
    return -1;
  }

  /** The rules for one key's records of a batch, whatever keeps the state. */
  static final class Rules implements java.io.Serializable {
    private static final long serialVersionUID = 1L;
    private final int digest;
    private final int seenMs;
    private final int error;
    private final int partition;
    private final int offset;
    private final String conflictReason;
    private final int eventTime;
    private final Bounds bounds;
    private final int rawValue;
    private final LongAccumulator rereads;

    Rules(
        StructType schema,
        String digestColumn,
        String seenMsColumn,
        String errorColumn,
        String partitionColumn,
        String offsetColumn,
        String conflictReason,
        Bounds bounds,
        String rawValueColumn,
        LongAccumulator rereads) {
      this.digest = schema.fieldIndex(digestColumn);
      this.seenMs = schema.fieldIndex(seenMsColumn);
      this.error = schema.fieldIndex(errorColumn);
      this.partition = schema.fieldIndex(partitionColumn);
      this.offset = schema.fieldIndex(offsetColumn);
      this.conflictReason = conflictReason;
      this.eventTime = schema.fieldIndex(bounds.eventTimeColumn);
      this.bounds = bounds;
      this.rawValue = rawValueColumn == null ? -1 : schema.fieldIndex(rawValueColumn);
      this.rereads = rawValueColumn == null ? null : rereads;
    }

    /**
     * Resolve one key's records at processing time {@code now} against the first digest kept
     * for it ({@code null}: none within the horizon). The output rows go to {@code out}; the
     * return value is the digest to keep when this batch saw the key's first valid record, else
     * {@code null} (the state unchanged).
     */
    Long resolve(Iterator<Row> values, long now, Long first, List<Row> out) {
      List<Row> rows = new ArrayList<>();
      values.forEachRemaining(rows::add);
      if (rows.size() > 1) {
        rows.sort(
            Comparator.comparingInt((Row r) -> r.getInt(partition))
                .thenComparingLong(r -> r.getLong(offset)));
      }
      Long kept = first;
      Long added = null;
      for (Row r : rows) {
        if (!r.isNullAt(error)) {
          out.add(seen(r, now, null)); // a dead letter: every one is kept
        } else if (outOfBounds(r, now)) {
          out.add(rejected(r, now, bounds.reason));
        } else if (kept == null) {
          kept = added = r.getLong(digest);
          out.add(seen(r, now, null));
        } else if (kept != r.getLong(digest)) {
          out.add(rejected(r, now, conflictReason));
        }
        // else: a copy of the first record, dropped
      }
      return added;
    }

    private boolean outOfBounds(Row r, long now) {
      if (r.isNullAt(eventTime)) {
        return false; // the validator required it: a null is some other dead letter's
      }
      // in microseconds, as the validator compares them
      long t = eventTimeMicros(r.get(eventTime));
      long nowMicros = now * 1000L;
      return t > nowMicros + bounds.maxAheadMs * 1000L || t < nowMicros - bounds.maxAgeMs * 1000L;
    }

    private static long eventTimeMicros(Object value) {
      if (value instanceof java.time.Instant) {
        java.time.Instant i = (java.time.Instant) value;
        return Math.multiplyExact(i.getEpochSecond(), 1_000_000L) + i.getNano() / 1000;
      }
      java.sql.Timestamp ts = (java.sql.Timestamp) value;
      return Math.floorDiv(ts.getTime(), 1000L) * 1_000_000L + ts.getNanos() / 1000;
    }

    /** A record this operator dead-letters, counted in {@code rereads} when it has no bytes. */
    private Row rejected(Row r, long now, String reason) {
      if (rereads != null && r.isNullAt(rawValue)) {
        rereads.add(1L);
      }
      return seen(r, now, reason);
    }

    /** The row with the batch's processing time in the seen-at column and, when given, an error. */
    private Row seen(Row r, long now, String reason) {
      Object[] values = new Object[r.length()];
      for (int i = 0; i < values.length; i++) {
        values[i] = r.get(i);
      }
      values[seenMs] = now;
      if (reason != null) {
        values[error] = reason;
      }
      return RowFactory.create(values);
    }
  }

  /**
   * The state per key: the first valid version's digest, which expires {@code horizonMs} after
   * it was written (the key's first sighting; a copy or a conflict does not extend it). An
   * expired value reads as absent before Spark has evicted it.
   */
  static final class Processor<K> extends StatefulProcessor<K, Row, Row> {
    private static final long serialVersionUID = 1L;
    private final Rules rules;
    private final long horizonMs;
    private final String stateName;
    private transient ValueState<Long> first;

    Processor(Rules rules, long horizonMs, String stateName) {
      this.rules = rules;
      this.horizonMs = horizonMs;
      this.stateName = stateName;
    }

    @Override
    public void init(OutputMode outputMode, TimeMode timeMode) {
      first =
          getHandle()
              .getValueState(
                  stateName, Encoders.LONG(), TTLConfig.apply(Duration.ofMillis(horizonMs)));
    }

    @Override
    public scala.collection.Iterator<Row> handleInputRows(
        K key, scala.collection.Iterator<Row> values, TimerValues timerValues) {
      List<Row> out = new ArrayList<>();
      Long added =
          rules.resolve(
              CollectionConverters.asJava(values),
              timerValues.getCurrentProcessingTimeInMs(),
              first.get(), // null: none, or expired
              out);
      if (added != null) {
        first.update(added);
      }
      return CollectionConverters.asScala(out.iterator());
    }
  }

  /** The earlier releases' operator: state (digest, first seen at), a processing-time timeout. */
  static final class Legacy
      implements FlatMapGroupsWithStateFunction<String, Row, Tuple2<Long, Long>, Row> {
    private static final long serialVersionUID = 1L;
    private final Rules rules;
    private final long horizonMs;

    Legacy(Rules rules, long horizonMs) {
      this.rules = rules;
      this.horizonMs = horizonMs;
    }

    @Override
    public Iterator<Row> call(String key, Iterator<Row> values, GroupState<Tuple2<Long, Long>> state) {
      if (state.hasTimedOut()) {
        state.remove();
        return Collections.emptyIterator();
      }
      final long now = state.getCurrentProcessingTimeMs();
      Tuple2<Long, Long> first = state.exists() ? state.get() : null;
      if (first != null && first._2() + horizonMs <= now) {
        first = null; // past the horizon, not yet evicted: this key is new again
      }
      List<Row> out = new ArrayList<>();
      Long added = rules.resolve(values, now, first == null ? null : first._1(), out);
      if (added != null) {
        first = new Tuple2<>(added, now);
        state.update(first);
      }
      if (first == null) {
        state.remove(); // nothing valid under this key within the horizon
      } else {
        // set on every call, or the timeout is cleared; the horizon has not passed (above)
        state.setTimeoutDuration(first._2() + horizonMs - now);
      }
      return out.iterator();
    }
  }
}
