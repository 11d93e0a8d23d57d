package rtap.spark;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.core.json.JsonReadFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.Serializable;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.time.DateTimeException;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.spark.api.java.function.MapPartitionsFunction;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.StructType;

/**
 * The event contract's validator on the JVM: the stream's hot path. Each Kafka record's value
 * becomes the contract's typed fields, or the reason it breaks the contract.
 *
 * <p>The rules are not written here: the field list, types, bounds, allowed values, required
 * fields per event type and reasons come from {@code include/events/contract.py}, passed as a
 * JSON spec ({@code include.events.validation.jvm_spec}). What is written here is how each
 * kind of rule reads JSON, and it follows the Python validator ({@code
 * include/events/validation.py}, the executable definition) exactly: the order of the checks,
 * the strict JSON it accepts (one UTF-8 document, last value of a repeated name, the literals
 * NaN, Infinity and -Infinity read as numbers, at most 1,024 levels of nesting, integers of
 * at most 4,300 digits), RFC 3339 dates checked against the calendar, lengths in code points,
 * Python's whitespace around a "NaN" string. {@code tests/unit/test_jvm_contract.py} checks that both agree, record by record, on
 * the named bad-input corpus and on fuzzed documents.
 *
 * <p>Why the JVM: the Python validator ran in Spark's Python workers through mapInArrow, and
 * moving every record to Python and back (Arrow IPC both ways, the per-row appends) cost more
 * than the rest of the read. Here a record costs a few microseconds of Jackson's streaming
 * parser (shipped with Spark) and never leaves the executor.
 */
public final class Contract implements Serializable {
  private static final long serialVersionUID = 1L;
  private static final Object CONTAINER = new Object(); // an object or array where a value is due
  private static final Set<String> JSON_NON_FINITE = Set.of("NaN", "Infinity", "-Infinity");
  private static final int MAX_NESTING = 1024; // orjson's limit; Python reads no deeper
  // Python's limit on an integer's digits (sys.int_info.default_max_str_digits): the standard
  // library's JSON reader refuses longer integers, which orjson could not read either.
  private static final int MAX_INT_DIGITS = 4300;

  private final int maxEventBytes;
  private final String[] names; // every contract field, in order (the output's order)
  private final String[] types;
  private final int[] maxLength;
  private final double[] low;
  private final double[] high;
  private final String[] above; // the reason of a number above the field's maximum
  private final List<Set<String>> allowed;
  private final Map<String, Integer> index = new HashMap<>();
  private final Map<String, Set<String>> required = new HashMap<>(); // event type -> names
  private final int eventType;
  private final int eventTime;
  private final long maxAheadUs;
  private final long maxAgeUs;
  private final String absurd;
  private final Set<String> nonFiniteStrings;
  private transient JsonFactory factory;

  private Contract(JsonNode spec) {
    maxEventBytes = spec.get("max_event_bytes").asInt();
    JsonNode fields = spec.get("fields");
    int n = fields.size();
    names = new String[n];
    types = new String[n];
    maxLength = new int[n];
    low = new double[n];
    high = new double[n];
    above = new String[n];
    allowed = new ArrayList<>(n);
    for (int i = 0; i < n; i++) {
      JsonNode f = fields.get(i);
      names[i] = f.get("name").asText();
      types[i] = f.get("type").asText();
      maxLength[i] = f.path("max_length").isNumber() ? f.get("max_length").asInt() : 1 << 30;
      low[i] = f.path("minimum").isNumber() ? f.get("minimum").asDouble() : Double.NEGATIVE_INFINITY;
      high[i] = f.path("maximum").isNumber() ? f.get("maximum").asDouble() : Double.POSITIVE_INFINITY;
      above[i] = f.path("above_reason").asText("out_of_range:" + names[i]);
      allowed.add(f.path("enum").isArray() ? strings(f.get("enum")) : null);
      index.put(names[i], i);
    }
    spec.get("required")
        .properties()
        .forEach(e -> required.put(e.getKey(), strings(e.getValue())));
    eventType = index.get(spec.get("event_type_field").asText());
    eventTime = index.get(spec.get("event_time_field").asText());
    maxAheadUs = spec.get("max_ahead_us").asLong();
    maxAgeUs = spec.get("max_age_us").asLong();
    absurd = spec.get("absurd_reason").asText();
    nonFiniteStrings = strings(spec.get("non_finite_strings"));
  }

  private static Set<String> strings(JsonNode array) {
    Set<String> out = new HashSet<>();
    array.forEach(v -> out.add(v.asText()));
    return out;
  }

  /** The validator of a spec written by {@code include.events.validation.jvm_spec()}. */
  public static Contract fromSpec(String specJson) throws IOException {
    return new Contract(new ObjectMapper().readTree(specJson));
  }

  private JsonFactory json() {
    if (factory == null) {
      factory =
          JsonFactory.builder()
              .enable(JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS) // the literals Python reads
              .streamReadConstraints(
                  StreamReadConstraints.builder()
                      .maxNestingDepth(MAX_NESTING)
                      .maxNumberLength(Integer.MAX_VALUE)
                      .build())
              .build();
    }
    return factory;
  }

  /**
   * Checks one record's value. Fills {@code out} (one slot per contract field: String, Long,
   * Double, or Long epoch microseconds for timestamps; null when absent) and returns null when
   * the record is valid, or returns the reason. {@code nowMicros} is the processing time the
   * event time is judged against; null skips that rule. Never throws: an unforeseen failure is
   * the reason {@code validator_error}, as in Python.
   */
  public String check(byte[] value, Long nowMicros, Object[] out) {
    try {
      return checkOrThrow(value, nowMicros, out);
    } catch (RuntimeException e) {
      java.util.Arrays.fill(out, null);
      return "validator_error";
    }
  }

  private String checkOrThrow(byte[] value, Long nowMicros, Object[] out) {
    if (value == null || value.length == 0) {
      return "empty_value";
    }
    if (value.length > maxEventBytes) {
      return "oversize";
    }
    String text;
    try {
      text =
          StandardCharsets.UTF_8
              .newDecoder()
              .onMalformedInput(CodingErrorAction.REPORT)
              .onUnmappableCharacter(CodingErrorAction.REPORT)
              .decode(ByteBuffer.wrap(value))
              .toString();
    } catch (CharacterCodingException e) {
      return "invalid_utf8";
    }
    Object[] raw = new Object[names.length];
    boolean object;
    try (JsonParser p = json().createParser(text)) {
      JsonToken t = p.nextToken();
      if (t == null) {
        return "malformed_json";
      }
      object = t == JsonToken.START_OBJECT;
      if (object) {
        while ((t = p.nextToken()) == JsonToken.FIELD_NAME) {
          Integer i = index.get(p.currentName());
          Object v = read(p, p.nextToken());
          if (i != null) {
            raw[i] = v; // a repeated name keeps its last value
          }
        }
      } else {
        read(p, t);
      }
      if (p.nextToken() != null) {
        return "malformed_json"; // trailing bytes, a second document
      }
    } catch (IOException | NotJson e) {
      return "malformed_json";
    }
    if (!object) {
      return "not_an_object";
    }
    Object etype = raw[eventType];
    if (etype == null) {
      return "missing_field:" + names[eventType];
    }
    if (!(etype instanceof String)) {
      return "wrong_type:" + names[eventType];
    }
    Set<String> needed = required.get(etype);
    if (needed == null) {
      return "unknown_event_type";
    }
    out[eventType] = etype;
    for (int i = 0; i < names.length; i++) {
      if (i == eventType) {
        continue;
      }
      Object v = raw[i];
      if (v == null) {
        if (needed.contains(names[i])) {
          return "missing_field:" + names[i];
        }
        out[i] = null;
        continue;
      }
      String reason;
      switch (types[i]) {
        case "string":
          reason = checkString(i, v, out);
          break;
        case "timestamp":
          reason = checkTimestamp(i, v, out);
          break;
        case "long":
        case "double":
          reason = checkNumber(i, v, out);
          break;
        default:
          throw new IllegalStateException("no rule for type " + types[i]);
      }
      if (reason != null) {
        return reason;
      }
    }
    if (nowMicros != null) {
      long t = (Long) out[eventTime];
      if (t > nowMicros + maxAheadUs || t < nowMicros - maxAgeUs) {
        return absurd;
      }
    }
    return null;
  }

  /** A JSON value's token the strict grammar refuses (Jackson's lenient literals). */
  private static final class NotJson extends RuntimeException {
    private static final long serialVersionUID = 1L;

    NotJson() {
      super(null, null, false, false);
    }
  }

  /** The value at the current token: String, Number, Boolean, null, or CONTAINER. */
  private static Object read(JsonParser p, JsonToken t) throws IOException {
    switch (t) {
      case VALUE_STRING:
        return p.getText();
      case VALUE_NUMBER_INT:
        if (p.getTextLength() > MAX_INT_DIGITS
            && p.getText().replace("-", "").length() > MAX_INT_DIGITS) {
          throw new NotJson(); // Python's int conversion refuses it
        }
        return p.getNumberValue();
      case VALUE_NUMBER_FLOAT:
        if (p.isNaN() && !JSON_NON_FINITE.contains(p.getText())) {
          throw new NotJson(); // +Infinity, -INF, ...: Python's json refuses them
        }
        return p.getDoubleValue();
      case VALUE_TRUE:
        return Boolean.TRUE;
      case VALUE_FALSE:
        return Boolean.FALSE;
      case VALUE_NULL:
        return null;
      case START_OBJECT:
      case START_ARRAY:
        int depth = 1;
        while (depth > 0) {
          JsonToken n = p.nextToken();
          if (n == null) {
            throw new NotJson();
          }
          if (n.isStructStart()) {
            depth++;
          } else if (n.isStructEnd()) {
            depth--;
          } else if (n.isNumeric()) {
            read(p, n);
          }
        }
        return CONTAINER;
      default:
        throw new NotJson();
    }
  }

  private String checkString(int i, Object v, Object[] out) {
    if (!(v instanceof String)) {
      return "wrong_type:" + names[i];
    }
    String s = (String) v;
    if (s.isEmpty()) {
      return "empty_string:" + names[i];
    }
    if (s.codePointCount(0, s.length()) > maxLength[i]) {
      return "too_long:" + names[i];
    }
    for (int k = 0; k < s.length(); ) {
      int c = s.codePointAt(k);
      if (c <= 0x1f || (c >= 0x7f && c <= 0x9f) || (c >= 0xd800 && c <= 0xdfff)) {
        return "control_character:" + names[i];
      }
      k += Character.charCount(c);
    }
    Set<String> ok = allowed.get(i);
    if (ok != null && !ok.contains(s)) {
      return "invalid_value:" + names[i];
    }
    out[i] = s;
    return null;
  }

  private String checkTimestamp(int i, Object v, Object[] out) {
    if (!(v instanceof String)) {
      return "wrong_type:" + names[i];
    }
    Long micros = timestampMicros((String) v);
    if (micros == null) {
      return "invalid_timestamp:" + names[i];
    }
    out[i] = micros;
    return null;
  }

  private String checkNumber(int i, Object v, Object[] out) {
    boolean integral = types[i].equals("long");
    String outOfRange = "out_of_range:" + names[i];
    double d;
    if (v instanceof Integer || v instanceof Long || v instanceof BigInteger) {
      d = ((Number) v).doubleValue(); // bounds are small: exact where it matters
    } else if (v instanceof Double) {
      d = (Double) v;
      if (!Double.isFinite(d)) {
        return outOfRange;
      }
      if (integral && d != Math.rint(d)) {
        return "wrong_type:" + names[i];
      }
    } else if (v instanceof String) {
      return nonFiniteStrings.contains(pythonStripLower((String) v))
          ? outOfRange
          : "wrong_type:" + names[i];
    } else {
      return "wrong_type:" + names[i];
    }
    if (d < low[i]) {
      return outOfRange;
    }
    if (d > high[i]) {
      return above[i];
    }
    if (integral) {
      out[i] = v instanceof Double ? (long) d : ((Number) v).longValue();
    } else {
      out[i] = d;
    }
    return null;
  }

  /** Python's {@code s.strip().lower()} where it matters: only ASCII letters can match. */
  private static String pythonStripLower(String s) {
    int from = 0;
    int to = s.length();
    while (from < to && pythonSpace(s.charAt(from))) {
      from++;
    }
    while (to > from && pythonSpace(s.charAt(to - 1))) {
      to--;
    }
    StringBuilder b = new StringBuilder(to - from);
    for (int k = from; k < to; k++) {
      char c = s.charAt(k);
      b.append(c >= 'A' && c <= 'Z' ? (char) (c + 32) : c);
    }
    return b.toString();
  }

  /** Python's {@code str.isspace()}. */
  private static boolean pythonSpace(char c) {
    return (c >= 0x09 && c <= 0x0d)
        || (c >= 0x1c && c <= 0x20)
        || c == 0x85
        || c == 0xa0
        || c == 0x1680
        || (c >= 0x2000 && c <= 0x200a)
        || c == 0x2028
        || c == 0x2029
        || c == 0x202f
        || c == 0x205f
        || c == 0x3000;
  }

  /**
   * Epoch microseconds (UTC) of an RFC 3339 date-time, or null: {@code
   * YYYY-MM-DD[Tt]hh:mm:ss[.f{1,9}](Z|z|+hh:mm|-hh:mm)} with ASCII digits, a real date (year 1
   * or later), hour 0-23, minute and second 0-59, and an offset below 24 hours (as Python's
   * datetime.fromisoformat: its minutes are not bounded to 59). Digits beyond microseconds are
   * truncated.
   */
  static Long timestampMicros(String s) {
    int n = s.length();
    if (n < 20
        || !digits(s, 0, 4)
        || s.charAt(4) != '-'
        || !digits(s, 5, 7)
        || s.charAt(7) != '-'
        || !digits(s, 8, 10)
        || (s.charAt(10) != 'T' && s.charAt(10) != 't')
        || !digits(s, 11, 13)
        || s.charAt(13) != ':'
        || !digits(s, 14, 16)
        || s.charAt(16) != ':'
        || !digits(s, 17, 19)) {
      return null;
    }
    int k = 19;
    long fraction = 0;
    if (s.charAt(k) == '.') {
      int start = ++k;
      while (k < n && isDigit(s.charAt(k))) {
        k++;
      }
      int count = k - start;
      if (count < 1 || count > 9) {
        return null;
      }
      for (int j = 0; j < 6; j++) {
        fraction = fraction * 10 + (start + j < k ? s.charAt(start + j) - '0' : 0);
      }
    }
    long offsetSeconds;
    if (k == n - 1 && (s.charAt(k) == 'Z' || s.charAt(k) == 'z')) {
      offsetSeconds = 0;
    } else if (k == n - 6
        && (s.charAt(k) == '+' || s.charAt(k) == '-')
        && digits(s, k + 1, k + 3)
        && s.charAt(k + 3) == ':'
        && digits(s, k + 4, k + 6)) {
      long minutes = number(s, k + 1, k + 3) * 60 + number(s, k + 4, k + 6);
      if (minutes >= 24 * 60) {
        return null;
      }
      offsetSeconds = (s.charAt(k) == '-' ? -60 : 60) * minutes;
    } else {
      return null;
    }
    int year = (int) number(s, 0, 4);
    int hour = (int) number(s, 11, 13);
    int minute = (int) number(s, 14, 16);
    int second = (int) number(s, 17, 19);
    if (year < 1 || hour > 23 || minute > 59 || second > 59) {
      return null;
    }
    long day;
    try {
      day = LocalDate.of(year, (int) number(s, 5, 7), (int) number(s, 8, 10)).toEpochDay();
    } catch (DateTimeException e) {
      return null;
    }
    long seconds = day * 86_400 + hour * 3_600L + minute * 60L + second - offsetSeconds;
    return seconds * 1_000_000 + fraction;
  }

  private static boolean isDigit(char c) {
    return c >= '0' && c <= '9';
  }

  private static boolean digits(String s, int from, int to) {
    for (int k = from; k < to; k++) {
      if (!isDigit(s.charAt(k))) {
        return false;
      }
    }
    return true;
  }

  private static long number(String s, int from, int to) {
    long v = 0;
    for (int k = from; k < to; k++) {
      v = v * 10 + (s.charAt(k) - '0');
    }
    return v;
  }

  /**
   * Kafka rows to checked rows (the Python side, {@code spark_apps/transforms/events.py}
   * parse, names the columns and turns the microsecond columns back into timestamps).
   *
   * <p>Input columns: key, value, topic, partition, offset, the Kafka timestamp and the
   * processing time (both epoch microseconds; the processing time null on a stream, where the
   * deduplication operator applies the event-time bounds). A record inside one of {@code
   * quarantine}'s ranges (which the stream's driver sets before each micro-batch's jobs, see
   * {@link Quarantine}) is dead-lettered as quarantined, unparsed. Output: {@code
   * outputSchemaJson}, the contract's fields in order (timestamps as epoch microseconds) and
   * then raw key, raw value, its size, topic, partition, offset, Kafka timestamp and the error.
   */
  public static Dataset<Row> apply(
      Dataset<Row> rows,
      String specJson,
      String outputSchemaJson,
      List<String> inputColumns,
      Quarantine quarantine)
      throws IOException {
    Contract contract = fromSpec(specJson);
    StructType in = rows.schema();
    int[] col = new int[inputColumns.size()];
    for (int k = 0; k < col.length; k++) {
      col[k] = in.fieldIndex(inputColumns.get(k));
    }
    StructType schema = (StructType) DataType.fromJson(outputSchemaJson);
    int n = contract.names.length;
    MapPartitionsFunction<Row, Row> checkAll =
        (Iterator<Row> it) ->
            new Iterator<Row>() {
              @Override
              public boolean hasNext() {
                return it.hasNext();
              }

              @Override
              public Row next() {
                Row r = it.next();
                Object[] values = new Object[n + 8];
                byte[] value = r.isNullAt(col[1]) ? null : (byte[]) r.get(col[1]);
                String error;
                if (!quarantine.isEmpty()
                    && quarantine.contains(r.getString(col[2]), r.getInt(col[3]), r.getLong(col[4]))) {
                  error = "quarantined";
                } else {
                  Long now = r.isNullAt(col[6]) ? null : r.getLong(col[6]);
                  error = contract.check(value, now, values);
                  if (error != null) {
                    java.util.Arrays.fill(values, 0, n, null);
                  }
                }
                values[n] = r.get(col[0]);
                values[n + 1] = value;
                values[n + 2] = value == null ? null : value.length;
                values[n + 3] = r.get(col[2]);
                values[n + 4] = r.get(col[3]);
                values[n + 5] = r.get(col[4]);
                values[n + 6] = r.get(col[5]);
                values[n + 7] = error;
                return RowFactory.create(values);
              }
            };
    return rows.mapPartitions(checkAll, Encoders.row(schema));
  }
}
