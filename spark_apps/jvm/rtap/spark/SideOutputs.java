package rtap.spark;

import java.io.Externalizable;
import java.io.IOException;
import java.io.ObjectInput;
import java.io.ObjectOutput;
import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.datasketches.hll.HllSketch;
import org.apache.datasketches.hll.TgtHllType;
import org.apache.datasketches.hll.Union;
import org.apache.spark.sql.Column;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoder;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.expressions.Aggregator;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.types.ArrayType;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.DecimalType;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import scala.jdk.javaapi.CollectionConverters;

/**
 * The stream's side outputs, computed in the lake's own pass over a micro-batch: aggregate
 * functions for Spark's observed metrics ({@code Dataset.observe}), which the tasks that write
 * the lake's Parquet files update as the rows go by and the driver reads once the write is done.
 * Before, the side outputs were Spark jobs of their own over the persisted batch: the persisted
 * copy slowed the lake's job, and each job cost its scheduling (bench/limits.md).
 *
 * <p>{@link #partials}: a live aggregate's partial rows, grouped by window and dimensions (sums
 * and HyperLogLog sketches, in Spark's {@code hll_sketch_agg} format: the same hashing, so that
 * they merge with the sketches Postgres already holds). {@link #rows}: the rows themselves (the
 * dead letters), their byte columns kept up to a bound and dropped after it (the driver reads
 * those records again from the topic). Observed metrics are the result of the job's successful
 * tasks, each counted once, as Spark's accumulators of a result stage are.
 *
 * <p>The Python side (spark_apps/stream_events.py, spark_apps/transforms/events.py) builds the
 * input struct from the registry's declarations (include/analytics/store.py).
 */
public final class SideOutputs {
  private SideOutputs() {}

  /**
   * An observable aggregate of {@code input}, a struct column (null for rows that do not count)
   * of type {@code type}: the window's start (long), {@code dimensions} strings, {@code sums}
   * numbers (long or decimal) and then the values to count distinctly (string or long), into
   * sketches of {@code lgK}. Its value: a struct with one field, {@code rows}, an array of
   * structs (window start, dimensions, sums, sketches as bytes), one per group.
   */
  public static Column partials(Column input, StructType type, int dimensions, int sums, int lgK) {
    return observable(new Partials(type, dimensions, sums, lgK), input, type);
  }

  /**
   * An observable aggregate of {@code input}, a struct column (null for rows not to keep) of
   * type {@code type}: a struct with {@code rows}, an array of those structs. The byte lengths
   * of {@code byteColumns} (binary) are added up over the rows kept; once the sum passes {@code
   * maxBytes}, further rows are kept with those columns null.
   */
  public static Column rows(Column input, StructType type, List<String> byteColumns, long maxBytes) {
    int[] indexes = byteColumns.stream().mapToInt(type::fieldIndex).toArray();
    return observable(new Rows(type, indexes, maxBytes), input, type);
  }

  /**
   * The rows of one observed aggregate ({@code field} of the observed metric's row {@code
   * observed}: its {@code rows}) as a local relation, for the driver's small writes.
   */
  public static Dataset<Row> frame(SparkSession spark, Row observed, String field) {
    int i = observed.fieldIndex(field);
    StructType type = (StructType) observed.schema().fields()[i].dataType();
    StructType element = (StructType) ((ArrayType) type.fields()[0].dataType()).elementType();
    Row value = observed.isNullAt(i) ? null : observed.getStruct(i);
    List<Row> rows = value == null ? List.of() : value.getList(0);
    return spark.createDataFrame(rows, element);
  }

  private static Column observable(Aggregator<Row, ?, Row> aggregator, Column input, StructType type) {
    StructType wrapped = new StructType().add("r", type, true);
    return functions
        .udaf(aggregator, Encoders.row(wrapped))
        .apply(CollectionConverters.asScala(List.of(input)).toSeq());
  }

  private static StructType result(DataType element) {
    return new StructType().add("rows", DataTypes.createArrayType(element, false), false);
  }

  /** The groups of one aggregate: key (window start, dimensions) -> sums and sketches. */
  public static final class Groups implements Externalizable {
    private static final long serialVersionUID = 1L;
    final Map<List<Object>, Object[]> groups = new HashMap<>();

    public Groups() {}

    @Override
    public void writeExternal(ObjectOutput out) throws IOException {
      out.writeInt(groups.size());
      for (Map.Entry<List<Object>, Object[]> e : groups.entrySet()) {
        out.writeObject(new ArrayList<>(e.getKey()));
        Object[] values = e.getValue();
        out.writeInt(values.length);
        for (Object v : values) {
          out.writeObject(v instanceof HllSketch s ? s.toUpdatableByteArray() : v);
        }
      }
    }

    @Override
    public void readExternal(ObjectInput in) throws IOException, ClassNotFoundException {
      int n = in.readInt();
      for (int i = 0; i < n; i++) {
        @SuppressWarnings("unchecked")
        List<Object> key = (List<Object>) in.readObject();
        Object[] values = new Object[in.readInt()];
        for (int j = 0; j < values.length; j++) {
          Object v = in.readObject();
          values[j] = v instanceof byte[] b ? HllSketch.heapify(b) : v;
        }
        groups.put(key, values);
      }
    }
  }

  static final class Partials extends Aggregator<Row, Groups, Row> {
    private static final long serialVersionUID = 1L;
    private final int keys;
    private final int sums;
    private final int distinct;
    private final int lgK;
    private final StructType output;

    Partials(StructType type, int dimensions, int sums, int lgK) {
      this.keys = 1 + dimensions;
      this.sums = sums;
      this.distinct = type.size() - keys - sums;
      this.lgK = lgK;
      if (distinct < 0) {
        throw new IllegalArgumentException("partials: " + type.size() + " fields for the declaration");
      }
      StructType element = new StructType();
      StructField[] fields = type.fields();
      for (int i = 0; i < keys + sums; i++) {
        DataType t = fields[i].dataType();
        if (i >= keys && t instanceof DecimalType d) {
          // Spark's sum of a decimal: ten more digits (a batch cannot add up to more).
          t = DataTypes.createDecimalType(Math.min(DecimalType.MAX_PRECISION(), d.precision() + 10), d.scale());
        } else if (i >= keys) {
          t = DataTypes.LongType;
        }
        element = element.add(fields[i].name(), t, true);
      }
      for (int i = keys + sums; i < fields.length; i++) {
        element = element.add(fields[i].name() + "_sketch", DataTypes.BinaryType, true);
      }
      this.output = result(element);
    }

    @Override
    public Groups zero() {
      return new Groups();
    }

    @Override
    public Groups reduce(Groups b, Row in) {
      Row r = in.getStruct(0);
      if (r == null) {
        return b;
      }
      Object[] key = new Object[keys];
      for (int i = 0; i < keys; i++) {
        key[i] = r.get(i);
      }
      Object[] values = b.groups.computeIfAbsent(Arrays.asList(key), k -> empty());
      for (int i = 0; i < sums; i++) {
        values[i] = add(values[i], r.get(keys + i));
      }
      for (int i = 0; i < distinct; i++) {
        Object v = r.get(keys + sums + i);
        HllSketch sketch = (HllSketch) values[sums + i];
        if (v instanceof String s) {
          sketch.update(s);
        } else if (v instanceof Number n) {
          sketch.update(n.longValue());
        }
      }
      return b;
    }

    private Object[] empty() {
      Object[] values = new Object[sums + distinct];
      for (int i = 0; i < distinct; i++) {
        values[sums + i] = new HllSketch(lgK, TgtHllType.HLL_4);
      }
      return values;
    }

    /** Spark's sum: nulls skipped, null when there was nothing to add. */
    private static Object add(Object total, Object v) {
      if (v == null) {
        return total;
      }
      if (v instanceof BigDecimal d) {
        return total == null ? d : ((BigDecimal) total).add(d);
      }
      long n = ((Number) v).longValue();
      return total == null ? Long.valueOf(n) : Long.valueOf(Math.addExact((Long) total, n));
    }

    @Override
    public Groups merge(Groups a, Groups b) {
      for (Map.Entry<List<Object>, Object[]> e : b.groups.entrySet()) {
        Object[] mine = a.groups.get(e.getKey());
        if (mine == null) {
          a.groups.put(e.getKey(), e.getValue());
          continue;
        }
        Object[] theirs = e.getValue();
        for (int i = 0; i < sums; i++) {
          mine[i] = add(mine[i], theirs[i]);
        }
        for (int i = 0; i < distinct; i++) {
          Union union = new Union(lgK);
          union.update((HllSketch) mine[sums + i]);
          union.update((HllSketch) theirs[sums + i]);
          mine[sums + i] = union.getResult(TgtHllType.HLL_4);
        }
      }
      return a;
    }

    @Override
    public Row finish(Groups b) {
      Row[] rows = new Row[b.groups.size()];
      int n = 0;
      for (Map.Entry<List<Object>, Object[]> e : b.groups.entrySet()) {
        Object[] out = new Object[keys + sums + distinct];
        List<Object> key = e.getKey();
        for (int i = 0; i < keys; i++) {
          out[i] = key.get(i);
        }
        Object[] values = e.getValue();
        for (int i = 0; i < sums; i++) {
          out[keys + i] = values[i];
        }
        for (int i = 0; i < distinct; i++) {
          out[keys + sums + i] = ((HllSketch) values[sums + i]).toUpdatableByteArray();
        }
        rows[n++] = RowFactory.create(out);
      }
      return RowFactory.create((Object) rows);
    }

    @Override
    public Encoder<Groups> bufferEncoder() {
      return Encoders.javaSerialization(Groups.class);
    }

    @Override
    public Encoder<Row> outputEncoder() {
      return Encoders.row(output);
    }
  }

  /** Rows kept by {@link Rows}, and the bytes their byte columns hold. */
  public static final class Kept implements java.io.Serializable {
    private static final long serialVersionUID = 1L;
    final ArrayList<Row> rows = new ArrayList<>();
    long bytes;
  }

  static final class Rows extends Aggregator<Row, Kept, Row> {
    private static final long serialVersionUID = 1L;
    private final int[] byteColumns;
    private final long maxBytes;
    private final StructType output;

    Rows(StructType type, int[] byteColumns, long maxBytes) {
      this.byteColumns = byteColumns;
      this.maxBytes = maxBytes;
      this.output = result(type);
    }

    @Override
    public Kept zero() {
      return new Kept();
    }

    @Override
    public Kept reduce(Kept b, Row in) {
      Row r = in.getStruct(0);
      if (r != null) {
        keep(b, r);
      }
      return b;
    }

    private void keep(Kept b, Row r) {
      long size = 0;
      for (int i : byteColumns) {
        size += r.isNullAt(i) ? 0 : ((byte[]) r.get(i)).length;
      }
      if (size == 0 || b.bytes + size <= maxBytes) {
        b.bytes += size;
        b.rows.add(r);
        return;
      }
      Object[] values = new Object[r.length()];
      for (int i = 0; i < values.length; i++) {
        values[i] = r.get(i);
      }
      for (int i : byteColumns) {
        values[i] = null;
      }
      b.rows.add(RowFactory.create(values));
    }

    @Override
    public Kept merge(Kept a, Kept b) {
      for (Row r : b.rows) {
        keep(a, r);
      }
      return a;
    }

    @Override
    public Row finish(Kept b) {
      return RowFactory.create((Object) b.rows.toArray(new Row[0]));
    }

    @Override
    public Encoder<Kept> bufferEncoder() {
      return Encoders.javaSerialization(Kept.class);
    }

    @Override
    public Encoder<Row> outputEncoder() {
      return Encoders.row(output);
    }
  }
}
