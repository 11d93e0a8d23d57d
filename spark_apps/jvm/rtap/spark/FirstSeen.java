package rtap.spark;

import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.Iterator;
import java.util.List;
import org.apache.spark.api.java.function.FlatMapGroupsWithStateFunction;
import org.apache.spark.api.java.function.MapFunction;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.streaming.GroupState;
import org.apache.spark.sql.streaming.GroupStateTimeout;
import org.apache.spark.sql.streaming.OutputMode;
import org.apache.spark.sql.types.StructType;
import scala.Tuple2;

/**
 * The stream's deduplication: the first record of each key within a horizon of processing time
 * is kept; a later record with the same key and the same content digest (a re-sent copy) is
 * dropped; one with the same key and a different digest is kept too, with its error column set
 * to the conflict reason, so that it is dead-lettered instead of silently dropped.
 *
 * <p>Records whose error column is already set (dead letters, keyed by their Kafka
 * coordinates) always pass and keep no state. Within one micro-batch, "first" means the lowest
 * (partition, offset). The state per key is (digest, first seen at, epoch ms); it times out when
 * the watermark of the seen-at column passes the first-seen time, so the watermark's delay is the
 * horizon. The Python side (spark_apps/transforms/events.py, first_seen) names the columns.
 *
 * <p>Why the JVM: Spark's Python stateful operators call Python once per key (and reach the
 * state through a socket), which costs more per record than the whole validator; here a key
 * costs a few microseconds. Spark's own dropDuplicatesWithinWatermark cannot say what it dropped.
 */
public final class FirstSeen {
  private FirstSeen() {}

  public static Dataset<Row> apply(
      Dataset<Row> rows,
      String keyColumn,
      String digestColumn,
      String seenMsColumn,
      String errorColumn,
      String partitionColumn,
      String offsetColumn,
      String conflictReason) {
    StructType schema = rows.schema();
    final int key = schema.fieldIndex(keyColumn);
    Dedupe dedupe =
        new Dedupe(
            schema.fieldIndex(digestColumn),
            schema.fieldIndex(seenMsColumn),
            schema.fieldIndex(errorColumn),
            schema.fieldIndex(partitionColumn),
            schema.fieldIndex(offsetColumn),
            conflictReason);
    return rows.groupByKey((MapFunction<Row, String>) r -> r.getString(key), Encoders.STRING())
        .flatMapGroupsWithState(
            dedupe,
            OutputMode.Append(),
            Encoders.tuple(Encoders.LONG(), Encoders.LONG()),
            Encoders.row(schema),
            GroupStateTimeout.EventTimeTimeout());
  }

  static final class Dedupe
      implements FlatMapGroupsWithStateFunction<String, Row, Tuple2<Long, Long>, Row> {
    private static final long serialVersionUID = 1L;
    private final int digest;
    private final int seenMs;
    private final int error;
    private final int partition;
    private final int offset;
    private final String conflictReason;

    Dedupe(int digest, int seenMs, int error, int partition, int offset, String conflictReason) {
      this.digest = digest;
      this.seenMs = seenMs;
      this.error = error;
      this.partition = partition;
      this.offset = offset;
      this.conflictReason = conflictReason;
    }

    @Override
    public Iterator<Row> call(String key, Iterator<Row> values, GroupState<Tuple2<Long, Long>> state) {
      if (state.hasTimedOut()) {
        state.remove();
        return Collections.emptyIterator();
      }
      List<Row> rows = new ArrayList<>();
      values.forEachRemaining(rows::add);
      if (rows.size() > 1) {
        rows.sort(
            Comparator.comparingInt((Row r) -> r.getInt(partition))
                .thenComparingLong(r -> r.getLong(offset)));
      }
      Tuple2<Long, Long> first = state.exists() ? state.get() : null;
      if (first != null && first._2() <= state.getCurrentWatermarkMs()) {
        first = null; // past the horizon, not yet evicted: this key is new again
      }
      boolean changed = false;
      List<Row> out = new ArrayList<>(rows.size());
      for (Row r : rows) {
        if (!r.isNullAt(error)) {
          out.add(r); // a dead letter: every one is kept
        } else if (first == null) {
          first = new Tuple2<>(r.getLong(digest), r.getLong(seenMs));
          changed = true;
          out.add(r);
        } else if (first._1() != r.getLong(digest)) {
          out.add(withError(r));
        }
        // else: a copy of the first record, dropped
      }
      if (first == null) {
        state.remove(); // nothing valid under this key within the horizon
      } else {
        if (changed) {
          state.update(first);
        }
        state.setTimeoutTimestamp(first._2()); // set on every call, or the timeout is cleared
      }
      return out.iterator();
    }

    private Row withError(Row r) {
      Object[] values = new Object[r.length()];
      for (int i = 0; i < values.length; i++) {
        values[i] = r.get(i);
      }
      values[error] = conflictReason;
      return RowFactory.create(values);
    }
  }
}
