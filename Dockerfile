# syntax=docker/dockerfile:1
# One image for every sensorstream workload on Kubernetes: the producer Deployment, the streaming
# SparkApplication (driver and executors), the report CronJob and the helm test pod.
#
#   make image   (the files git knows as the context: no .venv, jars or data; docker when a Docker
#                 engine answers, else buildah with a locally made debian:bookworm-slim base)
#
# Built from Debian packages and PyPI only, on debian:bookworm-slim:
#   stage "base": Debian's Java 17 (JRE) and Python 3.11; a virtualenv (/opt/sensorstream/venv;
#                 bookworm's Python is externally managed) with pyspark, which ships Spark itself
#                 (jars, bin/, the Kubernetes backend). SPARK_HOME=/opt/spark, a link to the venv's
#                 pyspark folder. User `spark`, uid/gid 185, with a passwd entry and a home.
#   stage "jars": Debian's Maven and JDK 17 resolve the Spark Kafka connector and its dependencies
#                 with the same pom and profile that `make jars` uses locally, so the image and a
#                 laptop run the very same jars; and javac compiles the fault detector
#                 (jobs/jvm/detector/build.sh, as `make detector` does) against the base's pyspark jars.
#   runtime:      the base, the connector and the detector copied into Spark's jars/, and the
#                 sensorstream package. Entrypoint: k8s/image/entrypoint.sh under tini (Spark's
#                 driver/executor contract; any other command runs as given). Nothing is
#                 downloaded when a pod starts.
#
# Versions that must agree, checked by tests/chart/test_chart_consistency.py:
#   SPARK_VERSION here == <spark.version> in jobs/jvm/pom.xml == sparkVersion in the chart
#                      == the pyspark pin in pyproject.toml (the `spark` extra installed below)
#   SCALA_BINARY_VERSION here == <scala.binary.version> in the pom (pyspark 4 is Scala 2.13)
# The build itself fails if the installed pyspark or the connector jar does not match them.
#
# Behind a TLS-inspecting proxy, pass its CA as a build secret (never stored in a layer):
#   --secret id=build-ca,src=<PEM file>   (make image does this with the CAs this machine added
#                                          under /usr/local/share/ca-certificates)

ARG SPARK_VERSION=4.0.4
ARG SCALA_BINARY_VERSION=2.13

# --- stage 1: the runtime's base: Java, Python, pyspark -------------------------------------------
FROM debian:bookworm-slim AS base
ARG SPARK_VERSION
ARG SCALA_BINARY_VERSION

LABEL org.opencontainers.image.title="sensorstream" \
      org.opencontainers.image.description="IoT sensor pipeline on Apache Kafka and Apache Spark: producer, streaming windows, batch report" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.sensorstream.spark-version="${SPARK_VERSION}"

# procps: Spark's scripts use ps. tini: PID 1 that forwards signals and reaps children.
# man1: see stage 1.
RUN set -eux; \
    mkdir -p /usr/share/man/man1; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
      openjdk-17-jre-headless python3 python3-venv tini bash procps; \
    # (ca-certificates-java runs Java as root while installing: its perf data stays in /tmp)
    apt-get clean; rm -rf /var/lib/apt/lists/* /tmp/hsperfdata_root; \
    groupadd --system --gid 185 spark; \
    useradd --system --uid 185 --gid 185 --home-dir /home/spark --create-home --shell /bin/bash spark

ENV VIRTUAL_ENV=/opt/sensorstream/venv \
    SPARK_HOME=/opt/spark \
    PYSPARK_PYTHON=/opt/sensorstream/venv/bin/python3 \
    PYTHONUNBUFFERED=1
ENV PATH=${VIRTUAL_ENV}/bin:${SPARK_HOME}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# pyspark first, in its own layer: ~450 MB that changes only with SPARK_VERSION, not with the code.
RUN --mount=type=secret,id=build-ca,required=false \
    set -eu; \
    if [ -s /run/secrets/build-ca ]; then \
      cat /etc/ssl/certs/ca-certificates.crt /run/secrets/build-ca > /tmp/build-ca.pem; \
      export PIP_CERT=/tmp/build-ca.pem; \
    fi; \
    python3 -m venv "$VIRTUAL_ENV"; \
    pip install --no-cache-dir --disable-pip-version-check "pyspark==${SPARK_VERSION}"; \
    ln -s "$(python3 -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')" "$SPARK_HOME"; \
    rm -f /tmp/build-ca.pem

# --- stage 2: the Spark Kafka connector jars and the fault detector ---------------------------------
FROM debian:bookworm-slim AS jars
# The slim image has no /usr/share/man: the JDK's update-alternatives fails without man1.
RUN set -eux; \
    mkdir -p /usr/share/man/man1; \
    apt-get update; \
    apt-get install -y --no-install-recommends maven openjdk-17-jdk-headless; \
    apt-get clean; rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY jobs/jvm/pom.xml jobs/jvm/pom.xml
# A build CA, if given, is added to Java's trust store of this throw-away stage only.
RUN --mount=type=secret,id=build-ca,required=false \
    set -eu; \
    if [ -s /run/secrets/build-ca ]; then \
      mkdir -p /usr/local/share/ca-certificates/build-ca; \
      awk '/-----BEGIN CERTIFICATE-----/ { n++ } n { print > ("/usr/local/share/ca-certificates/build-ca/" n ".crt") }' /run/secrets/build-ca; \
      update-ca-certificates >/dev/null; \
    fi; \
    mvn -B -q -f jobs/jvm/pom.xml -P spark-connector package -Djars.dir=/jars; \
    ls -1 /jars/spark
# The fault detector and the parse's explainer and reader, compiled against the very Spark jars the image runs (pyspark's, from the base;
# bookworm's Python is 3.11, so that is the venv's folder).
COPY --from=base /opt/sensorstream/venv/lib/python3.11/site-packages/pyspark/jars/ /spark-jars/
COPY jobs/jvm/detector/ jobs/jvm/detector/
COPY jobs/jvm/parse/ jobs/jvm/parse/
RUN jobs/jvm/detector/build.sh /spark-jars /jars/spark/sensorstream-detector.jar

# --- stage 3: the runtime -------------------------------------------------------------------------
FROM base
ARG SPARK_VERSION
ARG SCALA_BINARY_VERSION

# The connector and the detector next to Spark's own jars: on the classpath of driver and
# executors, no --jars.
COPY --from=jars /jars/spark/ /opt/spark/jars/

# The package, with the `spark` extra: pip checks that pyproject's pyspark pin is the one above.
COPY pyproject.toml README.md /opt/sensorstream/
COPY jobs/ /opt/sensorstream/jobs/
COPY k8s/image/entrypoint.sh /opt/sensorstream/entrypoint.sh
RUN --mount=type=secret,id=build-ca,required=false \
    set -eu; \
    if [ -s /run/secrets/build-ca ]; then \
      cat /etc/ssl/certs/ca-certificates.crt /run/secrets/build-ca > /tmp/build-ca.pem; \
      export PIP_CERT=/tmp/build-ca.pem; \
    fi; \
    pip install --no-cache-dir --disable-pip-version-check "/opt/sensorstream[spark]"; \
    rm -f /tmp/build-ca.pem; \
    # The package runs from site-packages; the copy under /opt/sensorstream/jobs stays for the
    # SparkApplication's main file and the log4j2 configuration the chart points the JVMs at.
    rm -rf /opt/sensorstream/build /opt/sensorstream/jobs/*.egg-info; \
    chmod 0755 /opt/sensorstream/entrypoint.sh; \
    mkdir -p /checkpoints /reports "$SPARK_HOME/work-dir"; \
    chown 185:185 /checkpoints /reports "$SPARK_HOME/work-dir"; \
    cd /tmp; \
    python3 -c "import pyspark, sensorstream, sys; sys.exit(pyspark.__version__ != '${SPARK_VERSION}')"; \
    test -f "$SPARK_HOME/jars/spark-sql-kafka-0-10_${SCALA_BINARY_VERSION}-${SPARK_VERSION}.jar"; \
    test -f "$SPARK_HOME/jars/spark-kubernetes_${SCALA_BINARY_VERSION}-${SPARK_VERSION}.jar"; \
    test -f "$SPARK_HOME/jars/sensorstream-detector.jar"; \
    command -v sensorstream spark-submit java tini

# The SparkApplication's mainApplicationFile is local:///opt/sensorstream/jobs/spark_entrypoint.py.
USER 185
WORKDIR /opt/spark/work-dir
# Spark starts driver and executor pods with args `driver ...` / `executor` and no command; the
# producer, report and test pods set their own command (which replaces this entrypoint).
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/sensorstream/entrypoint.sh"]
CMD ["sensorstream", "--help"]
