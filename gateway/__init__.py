"""desktrace gateway: the legacy ``POST /api/report`` API (-> StateChange events on the presence topic), the
working-time report pages and JSON API. Entry point: ``desktrace-gateway`` (:mod:`gateway.cli`); the
application factory is :func:`gateway.app.create_app`; see docs/gateway.md."""
