package sensorstream.detect;

import java.io.Serializable;

/** What SensorDetector keeps per sensor: a bean, so Spark's bean encoder stores it. Bounded: a few numbers. */
public final class SensorState implements Serializable {
  private double[] mean;
  private double[] var;
  private double[] last;
  private long seen;
  private long run;
  private long timerMs;
  private long newestUs;
  private String newestSource;
  private boolean silent;

  static SensorState fresh(int metrics) {
    SensorState s = new SensorState();
    s.mean = new double[metrics];
    s.var = new double[metrics];
    return s;
  }

  public double[] getMean() { return mean; }
  public void setMean(double[] v) { mean = v; }
  public double[] getVar() { return var; }
  public void setVar(double[] v) { var = v; }
  public double[] getLast() { return last; }
  public void setLast(double[] v) { last = v; }
  public long getSeen() { return seen; }
  public void setSeen(long v) { seen = v; }
  public long getRun() { return run; }
  public void setRun(long v) { run = v; }
  public long getTimerMs() { return timerMs; }
  public void setTimerMs(long v) { timerMs = v; }
  public long getNewestUs() { return newestUs; }
  public void setNewestUs(long v) { newestUs = v; }
  public String getNewestSource() { return newestSource; }
  public void setNewestSource(String v) { newestSource = v; }
  public boolean isSilent() { return silent; }
  public void setSilent(boolean v) { silent = v; }
}
