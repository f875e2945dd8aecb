"""EPCIS 2.0 repository: capture (JSON-LD and XML) and query, over the same trace_events
our own edges fill. `router(connection)` gives the FastAPI routes under /epcis."""

from cloud_collector.epcis.routes import router

__all__ = ["router"]
