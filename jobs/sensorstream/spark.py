"""The SparkSession factory: local mode on a laptop, whatever spark-submit chose in a cluster.

Locally it checks Java 17+, puts the Kafka connector jars (fetched by `make jars`) on the
classpath, keeps the driver heap modest and the logs quiet. Under spark-submit (the Spark
Operator's driver, or `make rehearse`) the master and jars come from spark-submit; this only
names the app and sets the session time zone.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from sensorstream.config import Settings
from sensorstream.errors import DependencyError
from sensorstream.jvm import find_java, jars_folder, require_jars

CONNECTOR_MARKER = "spark-sql-kafka-0-10_"
#: Where the driver's Spark UI serves Spark's metrics, and the namespace their names start with
#: (metrics_<namespace>_driver_...), fixed instead of Spark's default, the changing application id.
SPARK_METRICS_PATH = "/metrics/prometheus"
SPARK_METRICS_NAMESPACE = "sensorstream"
_LOG4J2 = Path(__file__).with_name("log4j2-spark.properties")
#: The garbage collector of a local-mode JVM (the driver and its executor threads in one heap of
#: 1 GiB). The JVM picks G1 on a machine of 2 cores; its concurrent cycles share those cores with
#: the tasks. The parallel collector stops the tasks for short young collections and does nothing
#: in between: ~15 % off a micro-batch on 2 cores (figures: jobs/README.md, "The local JVM's
#: collector").
#: A PYSPARK_SUBMIT_ARGS of the user's own replaces these options, this one included.
LOCAL_GC = "-XX:+UseParallelGC"


def launched_by_spark_submit() -> bool:
    """spark-submit starts the Python driver with a gateway already open."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def _spark_home_jars() -> Path | None:
    home = os.environ.get("SPARK_HOME")
    if home:
        return Path(home) / "jars"
    try:
        import pyspark
    except ImportError:
        return None
    return Path(pyspark.__file__).parent / "jars"


def connector_jars(settings: Settings) -> list[Path]:
    """The connector jars to add, or [] when Spark already ships them (the image bakes them in)."""
    builtin = _spark_home_jars()
    if builtin and any(builtin.glob(f"{CONNECTOR_MARKER}*.jar")):
        return []
    folder = settings.jars_dir or jars_folder("spark")
    return require_jars(folder, "Spark Kafka connector", CONNECTOR_MARKER)


#: The fault detector's jar (jobs/jvm/detector), built by `make detector`.
DETECTOR_MARKER = "sensorstream-detector"


def require_detector(settings: Settings) -> None:
    """With STREAM_DETECT=on: the detector's jar beside Spark's (the image) or in the jars folder,
    else a DependencyError naming `make detector`."""
    folders = [f for f in (_spark_home_jars(), Path(settings.jars_dir or jars_folder("spark"))) if f]
    if not any(any(folder.glob(f"{DETECTOR_MARKER}*.jar")) for folder in folders):
        raise DependencyError(
            f"STREAM_DETECT=on needs the fault detector's jar ({DETECTOR_MARKER}.jar), found in none of "
            f"{', '.join(str(f) for f in folders)}; build it with `make detector` (a JDK 17's javac), or set "
            "STREAM_DETECT=off"
        )


def metrics_conf(settings: Settings) -> dict[str, str]:
    """Spark's own metrics, the streaming queries' included, served by the UI at SPARK_METRICS_PATH."""
    sink = "spark.metrics.conf.*.sink.prometheusServlet"
    return {
        "spark.ui.enabled": "true",
        "spark.ui.port": str(settings.spark_ui_port),
        "spark.port.maxRetries": "0",  # the port asked for or a clear failure, never a neighbour's
        f"{sink}.class": "org.apache.spark.metrics.sink.PrometheusServlet",
        f"{sink}.path": SPARK_METRICS_PATH,
        "spark.metrics.namespace": SPARK_METRICS_NAMESPACE,
        "spark.sql.streaming.metricsEnabled": "true",
    }


def get_session(settings: Settings, serve_metrics: bool = False):
    """Get or create the SparkSession for a job; `serve_metrics` turns the UI and its metrics on."""
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.appName(settings.spark_app_name)
        .config("spark.sql.session.timeZone", "UTC")
        # The stream writes two small checkpoint files per micro-batch (offsets, then commit). Through
        # Hadoop's FileSystem API each took ~10 ms here, through FileContext (Spark's default) ~45 ms:
        # 70 ms of every micro-batch. Both write aside and rename; a rename is atomic on a local
        # or mounted volume (the chart's checkpoint PVC), which is what the choice between them is about.
        .config(
            "spark.sql.streaming.checkpointFileManagerClass",
            "org.apache.spark.sql.execution.streaming.FileSystemBasedCheckpointFileManager",
        )
    )
    if not launched_by_spark_submit():
        find_java()
        jars = connector_jars(settings)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # local mode needs no other interface
        if not os.environ.get("PYSPARK_SUBMIT_ARGS"):
            # Driver JVM options only take effect at launch, so they travel in the submit args.
            options = shlex.quote(f"-Dlog4j2.configurationFile=file:{_LOG4J2} {LOCAL_GC}")
            os.environ["PYSPARK_SUBMIT_ARGS"] = f"--driver-memory 1g --driver-java-options {options} pyspark-shell"
        builder = (
            builder.master(settings.spark_master)
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.ui.enabled", "false")
        )
        if jars:
            builder = builder.config("spark.jars", ",".join(str(j) for j in jars))
    if serve_metrics:
        for key, value in metrics_conf(settings).items():
            builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
