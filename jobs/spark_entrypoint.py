"""Main file for spark-submit (the SparkApplication's mainApplicationFile).

spark-submit runs a Python file, not a console script, so this file only hands over to the CLI:
    spark-submit jobs/spark_entrypoint.py stream --sinks console,kafka
"""

import sys

from sensorstream.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
