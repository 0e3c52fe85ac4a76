"""The aiohttp application factory: which routes a process serves, each counted and guarded (guard.py)."""

from __future__ import annotations

from aiohttp import web

from leadhub.hub.http import api, hooks, ops
from leadhub.hub.http.guard import guarded_routes
from leadhub.hub.http.state import DEPS, HttpDeps


def create_app(deps: HttpDeps, *, intake: bool = True) -> web.Application:
    """Ops routes always; webhooks and the API only when this process has the `http` role.

    No middleware: each route's handler is wrapped instead (guard.py says why).
    """
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[DEPS] = deps
    routes = ops.routes()
    if intake:
        routes += [*_intake_routes(), *api.routes()]
        if deps.worker == 0:  # once, not once per process
            api.warn_of_weak_access(deps.settings)
    app.router.add_routes(guarded_routes(routes, deps.metrics))
    return app


def _intake_routes() -> list[web.RouteDef]:
    # Some providers append their own path to the configured URL (Mango: /events/call); the tail is the connector's.
    # Every method reaches the connector: only it knows which it takes (a 405 naming them, `webhook.require_method`);
    # the router's 405 named the methods of every connector at once.
    return [web.route("*", "/hooks/{name}", hooks.hook), web.route("*", "/hooks/{name}/{tail:.+}", hooks.hook)]
