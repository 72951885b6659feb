#!/bin/sh
# Compile the fault detector, and the parse's explainer beside it (../parse), against the Spark jars
# they will run with, into one jar.
#
#   build.sh <folder of Spark's jars> <output jar>
#
# Used by `make detector` (pyspark's own jars, so the very Spark the stream runs) and by the
# image's build (the same jars, from the image's pyspark). Needs a JDK 17's javac and jar; nothing
# is downloaded.
set -eu
spark_jars=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
for tool in javac jar; do
  command -v "$tool" >/dev/null || {
    echo "$tool not found: the fault detector needs a JDK 17 (apt-get install openjdk-17-jdk-headless)" >&2
    exit 1
  }
done
ls "$spark_jars"/spark-sql_*.jar >/dev/null 2>&1 || {
  echo "no Spark jars in $spark_jars" >&2
  exit 1
}
classes=$(mktemp -d)
trap 'rm -rf "$classes"' EXIT
javac --release 17 -nowarn -d "$classes" -cp "$spark_jars/*" "$here"/src/sensorstream/detect/*.java \
  "$here"/../parse/src/sensorstream/parse/*.java
mkdir -p "$(dirname "$out")"
jar cf "$out.tmp" -C "$classes" .
mv "$out.tmp" "$out"
