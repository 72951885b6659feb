"""The embedded local stack: a real Apache Kafka broker (KRaft) from Maven jars, and its topics."""
