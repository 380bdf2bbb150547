"""Swagger UI at /docs, served from this process: no CDN, no floating version, nothing inline.

flask-smorest renders the page (``app/templates/swagger_ui.html`` overrides its template so that
the page holds no inline script); the assets come from the ``swagger-ui-bundle`` package, pinned
with our other dependencies, so the page runs exactly the code we shipped.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response, abort, send_from_directory
from swagger_ui_bundle import swagger_ui_path

ASSETS_URL = "/docs/assets/swagger-ui/"
# Only what the page loads: the bundle's directory also holds an index page and source maps.
ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"})

blp = Blueprint(
    "api_docs",
    __name__,
    static_folder=str(Path(__file__).parent / "api_docs_static"),
    static_url_path="/docs/assets/boomerang",
)


@blp.get(ASSETS_URL + "<name>")
def swagger_ui_asset(name: str) -> Response:
    if name not in ASSETS:
        abort(404)
    return send_from_directory(str(swagger_ui_path), name, max_age=3600)


def init_app(app: Flask) -> None:
    app.config["OPENAPI_SWAGGER_UI_URL"] = ASSETS_URL
    app.register_blueprint(blp)
