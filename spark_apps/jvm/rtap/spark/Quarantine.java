package rtap.spark;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.Serializable;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The operators' quarantined offset ranges ({@code stream_quarantine}), as the stream's
 * contract operator sees them in one micro-batch.
 *
 * <p>The driver reads the table at the start of each micro-batch, with the batch's own Postgres
 * connection, and {@link #set}s the ranges here before the batch's first Spark job. The
 * contract's function holds this object, and Spark serializes a job's functions when it submits
 * the job's stages: the tasks of that batch carry the ranges the driver read for it, in local
 * mode and on a cluster alike. This replaces a stream-static join with the table read over JDBC,
 * which cost a Spark job, a JDBC connection and a broadcast in every micro-batch (see
 * docs/architecture.md). A batch that Spark runs again (a retried task, a recomputed partition
 * of the persisted batch) gets the same ranges: they are set once per batch.
 *
 * <p>The ranges of one partition never overlap (the quarantine action refuses overlaps).
 */
public final class Quarantine implements Serializable {
  private static final long serialVersionUID = 1L;

  /**
   * topic -> partition -> the ranges' bounds, inclusive, sorted: from0, to0, from1, to1, ...
   * Replaced whole by {@link #set}, never changed in place.
   */
  private volatile Map<String, Map<Integer, long[]>> ranges = new HashMap<>();

  /**
   * Replace the ranges with those of {@code json}: an array of objects with {@code topic},
   * {@code partition}, {@code from_offset} and {@code to_offset} (inclusive).
   */
  public void set(String json) throws IOException {
    JsonNode rows = new ObjectMapper().readTree(json);
    Map<String, Map<Integer, List<long[]>>> byPartition = new HashMap<>();
    for (JsonNode row : rows) {
      long from = row.get("from_offset").asLong();
      long to = row.get("to_offset").asLong();
      if (to < from) {
        throw new IllegalArgumentException("a quarantined range ends before it starts: " + row);
      }
      byPartition
          .computeIfAbsent(row.get("topic").asText(), t -> new HashMap<>())
          .computeIfAbsent(row.get("partition").asInt(), p -> new ArrayList<>())
          .add(new long[] {from, to});
    }
    Map<String, Map<Integer, long[]>> built = new HashMap<>();
    byPartition.forEach(
        (topic, partitions) -> {
          Map<Integer, long[]> bounds = new HashMap<>();
          partitions.forEach(
              (partition, list) -> {
                list.sort((a, b) -> Long.compare(a[0], b[0]));
                long[] flat = new long[list.size() * 2];
                for (int k = 0; k < list.size(); k++) {
                  flat[2 * k] = list.get(k)[0];
                  flat[2 * k + 1] = list.get(k)[1];
                }
                bounds.put(partition, flat);
              });
          built.put(topic, bounds);
        });
    ranges = built;
  }

  /** Whether no range is held (the usual case: a check per record costs one read). */
  public boolean isEmpty() {
    return ranges.isEmpty();
  }

  /** How many ranges are held. */
  public int size() {
    int n = 0;
    for (Map<Integer, long[]> partitions : ranges.values()) {
      for (long[] bounds : partitions.values()) {
        n += bounds.length / 2;
      }
    }
    return n;
  }

  /** Whether the record at {@code offset} of {@code topic}/{@code partition} is quarantined. */
  public boolean contains(String topic, int partition, long offset) {
    Map<String, Map<Integer, long[]>> held = ranges;
    if (held.isEmpty()) {
      return false;
    }
    Map<Integer, long[]> partitions = held.get(topic);
    long[] bounds = partitions == null ? null : partitions.get(partition);
    if (bounds == null) {
      return false;
    }
    // The last range that starts at or before the offset: the only one that can hold it.
    int lo = 0;
    int hi = bounds.length / 2 - 1;
    int found = -1;
    while (lo <= hi) {
      int mid = (lo + hi) >>> 1;
      if (bounds[2 * mid] <= offset) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return found >= 0 && offset <= bounds[2 * found + 1];
  }
}
