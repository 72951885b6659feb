"""sensorstream: simulated IoT sensor readings through Kafka into Spark windows and reports.

The public surface is the command line (`sensorstream --help`); the modules below are its rooms:
config, errors, schema, simulator, producer, aggregate, streaming, report, spark, local, cli.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
