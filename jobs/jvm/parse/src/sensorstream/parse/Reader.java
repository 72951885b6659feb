package sensorstream.parse;

import java.util.Arrays;
import java.util.regex.Pattern;

import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF1;
import org.apache.spark.sql.expressions.UserDefinedFunction;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;

/**
 * The parse's fast path (jobs/sensorstream/schema.py, {@code check}): a record's bytes read into
 * the typed reading by one pass over them, for the plain records a producer sends; {@code null}
 * for anything else, which then takes Spark's strict {@code from_json} and the checks as before.
 *
 * <p>It answers only when it can prove the answer is the one {@code from_json} and the cheap
 * checks ({@code _well_formed}) give: a JSON object of ASCII text, each name one of the schema's
 * (the corrupt-record column's excepted) and given once, each value a string without escapes or
 * a {@code '}'} (a string field) or a JSON number (a double field; an integer of at most 18
 * digits for a long field), every required field there, the sensor id passing the checks'
 * tests, the timestamp matching their pattern. A number is read as Jackson reads it for Spark: an
 * integer through {@code long}, any other by {@link Double#parseDouble} (both exact roundings).
 * Everything else (escapes, nulls, nesting, repeated names, unknown names, non-ASCII bytes) is
 * {@code null}: Spark's path decides. {@code tests/test_schema.py} holds both ways equal.
 *
 * <p>Why: Spark's {@code from_json} and the checks' scans took about 4.4 us a record (jobs/README.md,
 * "The parse's fast path"); this reads a reading in a fraction of that.
 */
public final class Reader implements UDF1<byte[], Row> {
  private static final int STRING = 0;
  private static final int DOUBLE = 1;
  private static final int LONG = 2;
  private static final int MAX_DIGITS = 18;  // a long's exact range, with room: Jackson's int/long path

  private final String[] names;
  private final byte[][] nameBytes;
  private final int[] kinds;
  private final boolean[] required;
  private final int sensor;
  private final int timestamp;
  private final String pattern;
  private final String sensorNotFirst;  // characters a sensor id may not start with
  private transient Pattern compiled;

  /**
   * The reader as a UDF of a record's value (binary) returning {@code schema} (from_json's: string,
   * double and long fields and the corrupt-record column, always null here).
   *
   * @param schemaJson the parse's schema as Spark's JSON
   * @param corrupt the corrupt-record column's name
   * @param requiredNames the fields a reading must have
   * @param sensorField the sensor id's field; @param timestampField the timestamp's
   * @param timestampPattern the checks' pattern of a timestamp (a Java regex)
   * @param sensorNotFirst the characters a sensor id may not start or (whitespace) end with: the
   *     checks' own; whitespace is the first {@code whitespace} of them
   */
  public static UserDefinedFunction function(
      String schemaJson,
      String corrupt,
      String[] requiredNames,
      String sensorField,
      String timestampField,
      String timestampPattern,
      String sensorNotFirst) {
    StructType schema = (StructType) DataType.fromJson(schemaJson);
    Reader reader = new Reader(schema, corrupt, requiredNames, sensorField, timestampField, timestampPattern,
        sensorNotFirst);
    return functions.udf(reader, schema);
  }

  private Reader(
      StructType schema,
      String corrupt,
      String[] requiredNames,
      String sensorField,
      String timestampField,
      String timestampPattern,
      String sensorNotFirst) {
    StructField[] fields = schema.fields();
    names = new String[fields.length];
    nameBytes = new byte[fields.length][];
    kinds = new int[fields.length];
    required = new boolean[fields.length];
    int s = -1;
    int t = -1;
    for (int i = 0; i < fields.length; i++) {
      String name = fields[i].name();
      DataType type = fields[i].dataType();
      names[i] = name;
      nameBytes[i] = name.equals(corrupt) ? null : ascii(name);
      if (type.sameType(DataTypes.StringType)) {
        kinds[i] = STRING;
      } else if (type.sameType(DataTypes.DoubleType)) {
        kinds[i] = DOUBLE;
      } else if (type.sameType(DataTypes.LongType)) {
        kinds[i] = LONG;
      } else {
        throw new IllegalArgumentException("field " + name + ": " + type.simpleString() + " is not read here");
      }
      required[i] = Arrays.asList(requiredNames).contains(name);
      if (name.equals(sensorField)) {
        s = i;
      }
      if (name.equals(timestampField)) {
        t = i;
      }
    }
    if (s < 0 || t < 0 || kinds[s] != STRING || kinds[t] != STRING) {
      throw new IllegalArgumentException("the schema lacks string fields " + sensorField + " and " + timestampField);
    }
    sensor = s;
    timestamp = t;
    pattern = timestampPattern;
    this.sensorNotFirst = sensorNotFirst;
  }

  private static byte[] ascii(String name) {
    byte[] bytes = new byte[name.length()];
    for (int i = 0; i < bytes.length; i++) {
      char c = name.charAt(i);
      if (c < 0x20 || c > 0x7e || c == '"' || c == '\\') {
        throw new IllegalArgumentException("field name " + name + " is not plain ASCII");
      }
      bytes[i] = (byte) c;
    }
    return bytes;
  }

  private static boolean space(int c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
  }

  /** The first index at or after {@code i} that is not JSON whitespace. */
  private static int skipSpace(byte[] b, int i) {
    while (i < b.length && space(b[i])) {
      i++;
    }
    return i;
  }

  /** The index of the quote that ends the plain string whose text starts at {@code i}, or -1:
   * printable ASCII only, no escape and no '}' (the checks count every '}' of the record). */
  private static int stringEnd(byte[] b, int i) {
    for (; i < b.length; i++) {
      int c = b[i];
      if (c == '"') {
        return i;
      }
      if (c < 0x20 || c > 0x7e || c == '\\' || c == '}') {
        return -1;
      }
    }
    return -1;
  }

  /** The reading, or null when the record is anything but a plain one (Spark's path decides). */
  @Override
  public Row call(byte[] b) {
    if (b == null) {
      return null;
    }
    Object[] values = new Object[names.length];
    boolean[] seen = new boolean[names.length];
    int n = b.length;
    int i = skipSpace(b, 0);
    if (i >= n || b[i] != '{') {
      return null;
    }
    do {
      i = skipSpace(b, i + 1);  // past '{' or ','
      if (i >= n || b[i] != '"') {
        return null;  // an empty object, or not a name
      }
      int nameEnd = stringEnd(b, i + 1);
      int field = nameEnd < 0 ? -1 : field(b, i + 1, nameEnd);
      if (field < 0 || seen[field]) {
        return null;
      }
      seen[field] = true;
      i = skipSpace(b, nameEnd + 1);
      if (i >= n || b[i] != ':') {
        return null;
      }
      i = skipSpace(b, i + 1);
      if (i >= n) {
        return null;
      }
      if (kinds[field] == STRING) {
        int end = b[i] == '"' ? stringEnd(b, i + 1) : -1;
        if (end < 0) {
          return null;
        }
        values[field] = new String(b, 0, i + 1, end - i - 1);  // ASCII: one char a byte
        i = end + 1;
      } else {
        int end = number(b, i, n);
        if (end < 0) {
          return null;
        }
        Object value;  // not a conditional expression: it would unbox both to double
        if (kinds[field] == DOUBLE) {
          value = asDouble(b, i, end);
        } else {
          value = asLong(b, i, end);
        }
        if (value == null) {
          return null;
        }
        values[field] = value;
        i = end;
      }
      i = skipSpace(b, i);
      if (i >= n) {
        return null;
      }
    } while (b[i] == ',');
    if (b[i] != '}' || skipSpace(b, i + 1) != n) {
      return null;
    }
    for (int f = 0; f < names.length; f++) {
      if (required[f] && values[f] == null) {
        return null;
      }
    }
    if (!plainSensor((String) values[sensor]) || !timePattern().matcher((String) values[timestamp]).find(0)) {
      return null;
    }
    return RowFactory.create(values);
  }

  private Pattern timePattern() {
    if (compiled == null) {
      compiled = Pattern.compile(pattern);
    }
    return compiled;
  }

  /** The checks' tests of a sensor id: not empty, not starting as a number, object, array or
   * whitespace would, not true or false, not ending in whitespace. */
  private boolean plainSensor(String id) {
    if (id.isEmpty() || sensorNotFirst.indexOf(id.charAt(0)) >= 0 || space(id.charAt(id.length() - 1))) {
      return false;
    }
    return !id.equals("true") && !id.equals("false");
  }

  private int field(byte[] b, int start, int end) {
    int length = end - start;
    for (int f = 0; f < nameBytes.length; f++) {
      byte[] name = nameBytes[f];
      if (name != null && name.length == length && Arrays.equals(b, start, end, name, 0, length)) {
        return f;
      }
    }
    return -1;
  }

  /** The end of the JSON number at {@code i} (RFC 8259's grammar), or -1. */
  private static int number(byte[] b, int i, int n) {
    if (i < n && b[i] == '-') {
      i++;
    }
    if (i >= n) {
      return -1;
    }
    if (b[i] == '0') {
      i++;
    } else if (b[i] >= '1' && b[i] <= '9') {
      while (i < n && b[i] >= '0' && b[i] <= '9') {
        i++;
      }
    } else {
      return -1;
    }
    if (i < n && b[i] == '.') {
      i++;
      int digits = i;
      while (i < n && b[i] >= '0' && b[i] <= '9') {
        i++;
      }
      if (i == digits) {
        return -1;
      }
    }
    if (i < n && (b[i] == 'e' || b[i] == 'E')) {
      i++;
      if (i < n && (b[i] == '+' || b[i] == '-')) {
        i++;
      }
      int digits = i;
      while (i < n && b[i] >= '0' && b[i] <= '9') {
        i++;
      }
      if (i == digits) {
        return -1;
      }
    }
    return i;
  }

  private static boolean integer(byte[] b, int start, int end) {
    for (int i = start; i < end; i++) {
      if (b[i] == '.' || b[i] == 'e' || b[i] == 'E') {
        return false;
      }
    }
    return true;
  }

  /** An integer's "-0": whether Jackson keeps its sign is its own business; Spark's path decides. */
  private static boolean negativeZero(byte[] b, int start, int end) {
    return end - start == 2 && b[start] == '-' && b[start + 1] == '0';
  }

  private static Long asLong(byte[] b, int start, int end) {
    int digits = end - start - (b[start] == '-' ? 1 : 0);
    if (!integer(b, start, end) || digits > MAX_DIGITS || negativeZero(b, start, end)) {
      return null;
    }
    return Long.parseLong(new String(b, 0, start, end - start));
  }

  private static Double asDouble(byte[] b, int start, int end) {
    if (end - start > 64) {
      return null;
    }
    String text = new String(b, 0, start, end - start);
    if (integer(b, start, end)) {
      int digits = end - start - (b[start] == '-' ? 1 : 0);
      return digits > MAX_DIGITS || negativeZero(b, start, end) ? null : (double) Long.parseLong(text);
    }
    double value = Double.parseDouble(text);
    return Double.isFinite(value) ? value : null;
  }
}
