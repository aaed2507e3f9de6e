"""desktrace sinks: Kafka -> PostgreSQL writers (``desktrace-sink raw|sessions``) and the schema
migrations (:func:`sinks.migrations.apply_migrations`). See sinks/README.md."""
