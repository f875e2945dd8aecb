"""The HTTP API's routes, one `APIRouter` module per area; `cloud_collector.api.create_app`
only includes them (in `ROUTERS`' order), after building the app's state and middleware.

| area | module | paths | roles |
|---|---|---|---|
| health | `routes/health.py` | `/healthz` | none |
| batches | `routes/batches.py` | `/api/v1/batches...` | reader |
| trace, recall | `routes/trace.py` | `/api/v1/lots/{lot}/...`, `/api/v1/recall/...` | reader |
| devices | `routes/devices.py` | `/api/v1/devices/{device}/placements` | reader |
| ERP imports | `routes/erp.py` | `/api/v1/erp/...`, `/api/v1/qc-results` | importer |
| credentials | `routes/credentials.py` | `/api/v1/credentials...` | admin |
| edges | `routes/edges.py` | `/api/v1/edges...` | reader, provisioner |
| provisioning | `routes/provisioning.py` | `/api/v1/provisioning/...` | provisioner; reader |
| recall cases, drills | `routes/recall_cases.py` | `/api/v1/recall-cases...` | quality; reader |
| holds | `routes/holds.py` | `/api/v1/lots/{lot}/hold...`, `/api/v1/holds` | quality |
| alerts | `routes/alerts.py` | `/api/v1/alerts...`, `/api/v1/alert-...` | reader, quality; admin |
| warehouse | `routes/places.py` | `/api/v1/places...`, `/api/v1/lots/{lot}/places` | reader |
| FSMA 204 | `fsma204/routes.py` | `/api/v1/fsma204/...` | reader |
| EPCIS 2.0 | `epcis/routes.py` | `/epcis/...` | importer, reader, partner |
| pages | `pages/` (`pages.install`) | `/trace`, `/batches`, `/recall`... | reader, partner |

What routes share (roles, the request's connection, the app's settings and pool, lot
resolution, imports, JSON and CSV answers) is in `cloud_collector/endpoints.py`: a route
reaches it through dependencies, never through a closure over the app.
"""

from fastapi import APIRouter

from cloud_collector.epcis.routes import router as epcis
from cloud_collector.fsma204.routes import router as fsma204
from cloud_collector.routes.alerts import router as alerts
from cloud_collector.routes.batches import router as batches
from cloud_collector.routes.credentials import router as credentials
from cloud_collector.routes.devices import router as devices
from cloud_collector.routes.edges import router as edges
from cloud_collector.routes.erp import router as erp
from cloud_collector.routes.health import router as health
from cloud_collector.routes.holds import router as holds
from cloud_collector.routes.places import router as places
from cloud_collector.routes.provisioning import router as provisioning
from cloud_collector.routes.recall_cases import router as recall_cases
from cloud_collector.routes.trace import router as trace

ROUTERS: tuple[APIRouter, ...] = (
    health,
    batches,
    trace,
    devices,
    erp,
    credentials,
    edges,
    provisioning,
    fsma204,
    epcis,
    holds,
    alerts,
    recall_cases,
    places,
)

__all__ = ["ROUTERS"]
