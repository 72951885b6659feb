# syntax=docker/dockerfile:1
# One image for every sensorstream workload on Kubernetes: the producer Deployment, the streaming
# SparkApplication (driver and executors) and the report CronJob.
#
#   make image   (docker build with the files git knows as the context: no .venv, jars or data)
#
# Versions that must agree, checked by tests/chart/test_chart_consistency.py:
#   SPARK_VERSION here == <spark.version> in jobs/jvm/pom.xml == sparkVersion in the chart
#                      == the pyspark pin in pyproject.toml
#
# Stage 1 resolves the Spark Kafka connector and its dependencies with the same pom and profile
# that `make jars` uses locally, so the image and a laptop run the very same jars.
# Stage 2 is the official Apache Spark image (Ubuntu 22.04, Java 17, Python 3.10, user `spark`
# uid 185, SPARK_HOME=/opt/spark) with the connector baked into Spark's own jar folder and the
# sensorstream package installed. Nothing is downloaded when a pod starts.

ARG SPARK_VERSION=4.0.4
ARG MAVEN_IMAGE=maven:3.9.11-eclipse-temurin-17

FROM ${MAVEN_IMAGE} AS maven
WORKDIR /build
COPY jobs/jvm/pom.xml jobs/jvm/pom.xml
RUN mvn -B -q -f jobs/jvm/pom.xml -P spark-connector package -Djars.dir=/jars \
    && ls -1 /jars/spark

FROM apache/spark:${SPARK_VERSION}-scala2.13-java17-python3-ubuntu
ARG SPARK_VERSION

LABEL org.opencontainers.image.title="sensorstream" \
      org.opencontainers.image.description="IoT sensor pipeline on Apache Kafka and Apache Spark: producer, streaming windows, batch report" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.sensorstream.spark-version="${SPARK_VERSION}"

USER root

# The connector next to Spark's own jars: on the classpath of driver and executors, no --jars.
COPY --from=maven /jars/spark/ /opt/spark/jars/

# The package. Its runtime dependencies are kafka-python and pyyaml only; pyspark is the image's
# own (/opt/spark/python), which must match the JVM side exactly, so the `spark` extra is not used.
COPY pyproject.toml README.md /opt/sensorstream/
COPY jobs/ /opt/sensorstream/jobs/
RUN set -eux; \
    python3 -m pip install --no-cache-dir /opt/sensorstream; \
    # spark-submit puts pyspark on the path of the jobs it starts; plain `sensorstream report`
    # (the CronJob) runs Spark in local mode without spark-submit, so make the image's pyspark
    # and py4j importable for every Python process.
    site="$(python3 -c 'import site; print(site.getsitepackages()[0])')"; \
    { echo /opt/spark/python; ls -1 /opt/spark/python/lib/py4j-*-src.zip; } > "$site/spark.pth"; \
    # The package runs from site-packages; the copy under /opt/sensorstream/jobs stays for the
    # SparkApplication's main file and the log4j2 configuration the chart points the JVMs at.
    rm -rf /opt/sensorstream/build /opt/sensorstream/jobs/*.egg-info; \
    mkdir -p /checkpoints /reports; \
    chown 185:185 /checkpoints /reports; \
    cd /tmp; \
    python3 -c "import pyspark, sensorstream, sys; sys.exit(pyspark.__version__ != '${SPARK_VERSION}')"; \
    command -v sensorstream

# The SparkApplication's mainApplicationFile is local:///opt/sensorstream/jobs/spark_entrypoint.py.
USER 185
WORKDIR /opt/spark/work-dir
# The Spark image's entrypoint stays: the Spark Operator relies on it for driver and executor
# pods; for the producer and report pods the chart sets the command.
