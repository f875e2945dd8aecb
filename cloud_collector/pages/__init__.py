"""The pages people read: sign-in, trace (the one-click report with its genealogy graph),
batches (parameter charts, overlays), recall (by lot or by condition, with downloads), and
a partner's own lots; in English and Simplified Chinese, dates in the plant's time zone.

Served by the collector itself from this package: Jinja templates, a stylesheet, a few
scripts of ours and the vendored libraries in static/vendor/ (VERSIONS says which and
under which licence; no build step, no CDN). Every page is behind the API's own check
(auth.require: keys, roles, partners) through a session cookie (session.py); the JSON the
pages' scripts fetch comes from the API's routes with that same session.

| module | paths | roles |
|---|---|---|
| `session.py` | `/`, `/signin`, `/signout`, `/language` | none |
| `trace_page.py` | `/trace` | reader |
| `batch_page.py` | `/batches`, `/batches/{id}`, `/compare` | reader |
| `recall_page.py` | `/recall`, `/recall/condition` | reader |
| `partner_page.py` | `/partner` | partner |
"""

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from cloud_collector.pages import batch_page, partner_page, recall_page, session, trace_page
from cloud_collector.pages.guard import install_handlers
from cloud_collector.pages.render import STATIC, STATIC_URL
from cloud_collector.pages.session import PUBLIC_PATHS

ROUTERS = (
    session.router,
    trace_page.router,
    batch_page.router,
    recall_page.router,
    partner_page.router,
)


def install(app: FastAPI) -> None:
    """The pages' routes, their static files and their answers to refusals, on `app`."""
    for router in ROUTERS:
        app.include_router(router)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC), name="pages-static")
    install_handlers(app)


__all__ = ["PUBLIC_PATHS", "ROUTERS", "install"]
