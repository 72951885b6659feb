#!/usr/bin/env bash
# The image's entrypoint (run under tini). Three cases:
#   driver ARGS...    the Spark driver pod. Spark on Kubernetes (cluster mode, here submitted by the
#                     Spark Operator) starts it with args `driver --properties-file
#                     /opt/spark/conf/spark.properties --class ... <main file> <app args>`;
#                     the driver runs spark-submit in client mode inside its own pod.
#   executor          an executor pod: no args, everything comes from the SPARK_* environment the
#                     driver puts in the pod spec (Spark 4.0, BasicExecutorFeatureStep).
#   anything else     run as given: the producer, report and helm test pods set their command.
#
# Environment Spark sets and this script reads (names from Spark 4.0's k8s Constants):
#   driver:   SPARK_DRIVER_BIND_ADDRESS (the pod IP), PYSPARK_PYTHON / PYSPARK_DRIVER_PYTHON
#             when spark.pyspark.* are set (spark-submit reads them itself)
#   executor: SPARK_DRIVER_URL, SPARK_EXECUTOR_ID, SPARK_EXECUTOR_CORES, SPARK_EXECUTOR_MEMORY,
#             SPARK_APPLICATION_ID, SPARK_EXECUTOR_POD_IP, SPARK_EXECUTOR_POD_NAME,
#             SPARK_RESOURCE_PROFILE_ID, SPARK_JAVA_OPT_<n> (one JVM option each, n from 0),
#             SPARK_CLASSPATH (spark.executor.extraClassPath), SPARK_CONF_DIR (/opt/spark/conf,
#             a ConfigMap Spark mounts)
#   both:     HADOOP_CONF_DIR when a Hadoop configuration is mounted; SPARK_EXTRA_CLASSPATH is
#             this image's own hook for more jars (unset by default).
set -euo pipefail

: "${SPARK_HOME:?SPARK_HOME is not set (the image sets it)}"

# Without a passwd entry for the uid, Hadoop's login fails ("invalid null input: name"). The image
# has one for 185; a pod running as another uid would need nss_wrapper or a matching image.
if ! getent passwd "$(id -u)" >/dev/null 2>&1; then
  echo "entrypoint: warning: uid $(id -u) has no passwd entry; Spark's Hadoop login may fail" >&2
fi

# The classpath of the executor JVM: configuration folders first (log4j2 and Hadoop files are
# found as resources), then what Spark asks for, then Spark's own jars (which here include the
# Kafka connector, copied in at build time).
executor_classpath() {
  local cp=""
  cp+="${SPARK_CONF_DIR:-$SPARK_HOME/conf}:"
  [ -z "${HADOOP_CONF_DIR:-}" ] || cp+="$HADOOP_CONF_DIR:"
  [ -z "${SPARK_CLASSPATH:-}" ] || cp+="$SPARK_CLASSPATH:"
  cp+="$SPARK_HOME/jars/*"
  [ -z "${SPARK_EXTRA_CLASSPATH:-}" ] || cp+=":$SPARK_EXTRA_CLASSPATH"
  printf '%s' "$cp"
}

case "${1:-}" in
  driver)
    shift
    : "${SPARK_DRIVER_BIND_ADDRESS:?the driver pod must set SPARK_DRIVER_BIND_ADDRESS (Spark does)}"
    exec spark-submit \
      --conf "spark.driver.bindAddress=$SPARK_DRIVER_BIND_ADDRESS" \
      --deploy-mode client \
      "$@"
    ;;
  executor)
    shift
    for var in SPARK_DRIVER_URL SPARK_EXECUTOR_ID SPARK_EXECUTOR_CORES SPARK_EXECUTOR_MEMORY \
               SPARK_APPLICATION_ID SPARK_EXECUTOR_POD_IP SPARK_EXECUTOR_POD_NAME; do
      [ -n "${!var:-}" ] || { echo "entrypoint: executor pod without $var (is this pod made by Spark?)" >&2; exit 64; }
    done
    # SPARK_JAVA_OPT_0, _1, ... in numeric order; each value is one option, spaces and all.
    java_opts=()
    while read -r n; do
      name="SPARK_JAVA_OPT_$n"
      java_opts+=("${!name}")
    done < <(compgen -v SPARK_JAVA_OPT_ | sed -n 's/^SPARK_JAVA_OPT_\([0-9]\+\)$/\1/p' | sort -n)
    exec "${JAVA_HOME:+$JAVA_HOME/bin/}java" \
      "-Xms$SPARK_EXECUTOR_MEMORY" "-Xmx$SPARK_EXECUTOR_MEMORY" \
      "${java_opts[@]}" \
      -cp "$(executor_classpath)" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" \
      --executor-id "$SPARK_EXECUTOR_ID" \
      --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" \
      --hostname "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}" \
      --podName "$SPARK_EXECUTOR_POD_NAME" \
      "$@"
    ;;
  "")
    echo "usage: entrypoint.sh driver ARGS... | executor | COMMAND [ARGS...]" >&2
    exit 64
    ;;
  *)
    exec "$@"
    ;;
esac
