"""EPCIS 2.0 repository: capture (JSON-LD and XML) and query, over the same trace_events
our own edges fill. `epcis.routes.router` holds the FastAPI routes under /epcis."""
