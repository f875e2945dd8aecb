"""Cloud collector: ingest from MQTT into TimescaleDB, and the trace API."""
