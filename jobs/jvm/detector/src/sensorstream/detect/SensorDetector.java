package sensorstream.detect;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.streaming.ExpiredTimerInfo;
import org.apache.spark.sql.streaming.OutputMode;
import org.apache.spark.sql.streaming.StatefulProcessor;
import org.apache.spark.sql.streaming.TTLConfig;
import org.apache.spark.sql.streaming.TimeMode;
import org.apache.spark.sql.streaming.TimerValues;
import org.apache.spark.sql.streaming.ValueState;
import org.apache.spark.sql.types.StructType;
import scala.jdk.javaapi.CollectionConverters;

/**
 * Per sensor, in Spark's state store (transformWithState): spikes, stuck sensors, silent ones.
 *
 * <p>Input: the stream's shuffled records as {@code streaming/plan.detector_input} gives them:
 * sensor_id string (null: no reading for the detector), event_us long (event time, microseconds),
 * temperature, humidity, pressure double, source_partition int, source_offset long, and a reject's
 * dead letter (reject_key, reject_value, reason_kind strings; null for the others). Output
 * ({@link #ALERTS}): one row per alert, and each reject's dead letter as it came (kind "reject"):
 * the stream reads its shuffled records once for both (jobs/README.md, "What detection costs").
 * Why in the JVM and not in Python: jobs/README.md, "Detecting faulty sensors".
 *
 * <ul>
 *   <li>spike: a metric more than {@code k} standard deviations from the sensor's own exponentially
 *       weighted mean (weight {@code alpha}), once it has seen {@code warmUp} readings; a spike, and a
 *       reading repeating the one before it, are left out of the mean and variance.
 *   <li>stuck: the {@code stuckRun}-th consecutive reading with the very same three values.
 *   <li>silent: nothing from the sensor for {@code silentMs} of event time while the others go on (an
 *       event-time timer at its newest reading + silentMs - the watermark's delay, so it fires once the
 *       newest event time of the whole stream has passed that mark: no more delay than the batch that
 *       carries it); back: its next reading.
 * </ul>
 *
 * <p>An alert's key is the sensor, the kind and the source of the reading that raised it (for
 * silent: of the sensor's last reading), so a replayed batch raises alerts with the same keys.
 */
public final class SensorDetector extends StatefulProcessor<String, Row, Row> {
  public static final StructType ALERTS = new StructType()
      .add("key", "string")
      .add("sensor_id", "string")
      .add("kind", "string")
      .add("metric", "string")
      .add("value", "double")
      .add("expected_low", "double")
      .add("expected_high", "double")
      .add("event_us", "long")
      .add("source", "string")
      .add("reason_kind", "string")
      .add("reject_value", "string");

  static final String[] METRICS = {"temperature", "humidity", "pressure"};
  /** No standard deviation is taken below this: a very steady sensor's noise is not a spike. */
  static final double MIN_STD = 0.05;

  private final double k;
  private final double alpha;
  private final long warmUp;
  private final long stuckRun;
  private final long silentMs;
  private final long watermarkDelayMs;
  private final String topic;
  private transient ValueState<SensorState> state;

  public SensorDetector(double k, double alpha, long warmUp, long stuckRun, long silentMs, long watermarkDelayMs,
      String topic) {
    this.topic = topic;
    this.k = k;
    this.alpha = alpha;
    this.warmUp = warmUp;
    this.stuckRun = stuckRun;
    this.silentMs = silentMs;
    this.watermarkDelayMs = watermarkDelayMs;
  }

  /** readings (see the class) grouped by sensor_id -> alerts; event-time timers for silence (the
   *  query must have a watermark of `watermarkDelayMs`). */
  public static Dataset<Row> alerts(Dataset<Row> readings, double k, double alpha, long warmUp, long stuckRun,
      long silentMs, long watermarkDelayMs, String topic) {
    return readings.groupBy("sensor_id")
        .as(Encoders.STRING(), Encoders.row(readings.schema()))
        .transformWithState(
            new SensorDetector(k, alpha, warmUp, stuckRun, silentMs, watermarkDelayMs, topic),
            TimeMode.EventTime(),
            OutputMode.Update(),
            Encoders.row(ALERTS));
  }

  @Override
  public void init(OutputMode outputMode, TimeMode timeMode) {
    state = getHandle().getValueState("sensor", Encoders.bean(SensorState.class), TTLConfig.NONE());
  }

  @Override
  public scala.collection.Iterator<Row> handleInputRows(
      String sensor, scala.collection.Iterator<Row> rows, TimerValues timerValues) {
    if (sensor == null) {
      return rejects(rows);
    }
    List<Row> readings = new ArrayList<>();
    while (rows.hasNext()) {
      readings.add(rows.next());
    }
    Row first = readings.get(0);
    int eventUs = first.fieldIndex("event_us");
    int partition = first.fieldIndex("source_partition");
    int offset = first.fieldIndex("source_offset");
    java.util.function.Function<Row, String> source =
        r -> topic + "|" + r.getInt(partition) + "|" + r.getLong(offset);
    int[] metric = new int[METRICS.length];
    for (int j = 0; j < METRICS.length; j++) {
      metric[j] = first.fieldIndex(METRICS[j]);
    }
    readings.sort(Comparator.comparingLong((Row r) -> r.getLong(eventUs)).thenComparingInt(r -> r.getInt(partition))
        .thenComparingLong(r -> r.getLong(offset)));

    SensorState s = state.exists() ? state.get() : SensorState.fresh(METRICS.length);
    List<Row> alerts = new ArrayList<>();
    double[] mean = s.getMean();
    double[] var = s.getVar();
    double[] last = s.getLast();
    long seen = s.getSeen();
    long run = s.getRun();
    long previousUs = s.getNewestUs();
    String previousSource = s.getNewestSource();
    Row previousRow = null;  // in this batch: its source is made only when an alert needs it
    boolean silent = s.isSilent();
    for (Row r : readings) {
      long us = r.getLong(eventUs);
      // a gap longer than silentMs in event time is a silence, whatever batches it fell between
      // (the timer says so while it lasts; a backlog read in large batches may skip the timer)
      if (!silent && previousUs > 0 && us - previousUs > silentMs * 1000) {
        String was = previousRow == null ? previousSource : source.apply(previousRow);
        alerts.add(alert(sensor, "silent", null, Double.NaN, Double.NaN, Double.NaN, previousUs, was));
        silent = true;
      }
      if (silent) {
        alerts.add(alert(sensor, "back", null, Double.NaN, Double.NaN, Double.NaN, us, source.apply(r)));
        silent = false;
        seen = 0;  // its baseline is stale after a silence: learnt again before it judges
        last = null;
        run = 0;
      }
      previousUs = Math.max(previousUs, us);
      previousRow = r;
      double[] x = new double[METRICS.length];
      for (int j = 0; j < x.length; j++) {
        x[j] = r.getDouble(metric[j]);
      }
      boolean repeat = last != null && java.util.Arrays.equals(x, last);
      run = repeat ? run + 1 : 1;
      if (run == stuckRun) {
        alerts.add(alert(sensor, "stuck", null, x[0], Double.NaN, Double.NaN, r.getLong(eventUs), source.apply(r)));
      }
      boolean spike = false;
      if (!repeat && seen >= warmUp) {
        for (int j = 0; j < x.length; j++) {
          double band = k * Math.max(Math.sqrt(var[j]), MIN_STD);
          if (Math.abs(x[j] - mean[j]) > band) {
            spike = true;
            alerts.add(alert(sensor, "spike", METRICS[j], x[j], mean[j] - band, mean[j] + band,
                r.getLong(eventUs), source.apply(r)));
          }
        }
      }
      if (!repeat && !spike) {
        if (seen == 0) {
          System.arraycopy(x, 0, mean, 0, x.length);
        } else {
          for (int j = 0; j < x.length; j++) {
            double d = x[j] - mean[j];
            mean[j] += alpha * d;
            var[j] = (1 - alpha) * (var[j] + alpha * d * d);
          }
        }
        seen++;
      }
      last = x;
    }
    s.setSilent(false);
    Row newest = readings.get(readings.size() - 1);
    long newestUs = Math.max(s.getNewestUs(), newest.getLong(eventUs));
    long due = newestUs / 1000 + silentMs - watermarkDelayMs;
    if (due != s.getTimerMs()) {
      if (s.getTimerMs() != 0) {
        getHandle().deleteTimer(s.getTimerMs());
      }
      getHandle().registerTimer(due);
      s.setTimerMs(due);
    }
    s.setMean(mean);
    s.setVar(var);
    s.setLast(last);
    s.setSeen(seen);
    s.setRun(run);
    if (newest.getLong(eventUs) >= s.getNewestUs()) {
      s.setNewestSource(source.apply(newest));
    }
    s.setNewestUs(newestUs);
    state.update(s);
    return CollectionConverters.asScala(alerts.iterator());
  }

  @Override
  public scala.collection.Iterator<Row> handleExpiredTimer(
      String sensor, TimerValues timerValues, ExpiredTimerInfo expired) {
    List<Row> alerts = new ArrayList<>();
    if (state.exists()) {
      SensorState s = state.get();
      if (!s.isSilent() && s.getTimerMs() == expired.getExpiryTimeInMs()) {
        alerts.add(alert(sensor, "silent", null, Double.NaN, Double.NaN, Double.NaN, s.getNewestUs(), s.getNewestSource()));
        s.setSilent(true);
        s.setTimerMs(0);
        state.update(s);
      }
    }
    return CollectionConverters.asScala(alerts.iterator());
  }

  /** The rows of no sensor: each reject's dead letter, as it came; nothing for the others (a
   *  reading's row for a window other than its newest). No state: a reject belongs to no sensor. */
  private static scala.collection.Iterator<Row> rejects(scala.collection.Iterator<Row> rows) {
    List<Row> out = new ArrayList<>();
    int key = -1;
    int value = -1;
    int reason = -1;
    while (rows.hasNext()) {
      Row r = rows.next();
      if (key < 0) {
        key = r.fieldIndex("reject_key");
        value = r.fieldIndex("reject_value");
        reason = r.fieldIndex("reason_kind");
      }
      if (!r.isNullAt(key)) {
        out.add(RowFactory.create(r.getString(key), null, "reject", null, null, null, null, null, null,
            r.getString(reason), r.getString(value)));
      }
    }
    return CollectionConverters.asScala(out.iterator());
  }

  private static Row alert(String sensor, String kind, String metric, double value, double low, double high,
      long eventUs, String source) {
    String key = sensor + "|" + kind + (metric == null ? "" : ":" + metric) + "|" + source;
    return RowFactory.create(key, sensor, kind, metric, nan(value), nan(low), nan(high), eventUs, source, null, null);
  }

  private static Double nan(double v) {
    return Double.isNaN(v) ? null : v;
  }
}
