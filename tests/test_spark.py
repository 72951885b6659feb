"""The local Spark JVM `get_session` launches (local mode: the driver and its executor threads)."""

from __future__ import annotations

from sensorstream.spark import LOCAL_GC


def test_the_local_jvm_runs_the_parallel_collector(spark):
    management = spark.sparkContext._jvm.java.lang.management.ManagementFactory
    assert LOCAL_GC in list(management.getRuntimeMXBean().getInputArguments())
    collectors = {bean.getName() for bean in management.getGarbageCollectorMXBeans()}
    assert collectors == {"PS Scavenge", "PS MarkSweep"}, collectors
