"""The Flask shell around Tenure's engines: ``create_app`` binds everything."""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path

from flask import Flask, abort, g, has_request_context, request, send_from_directory
from flask_babel import format_number, get_locale
from swagger_ui_bundle import swagger_ui_path
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter, PathConverter

from config import Settings
from members.fields import mask_phones

log = logging.getLogger(__name__)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def create_app(settings: Settings | None = None, **config_overrides: object) -> Flask:
    """Build the app from settings (from the environment when not given)."""
    from app import redis_client
    from app.extensions import api, babel, csrf, db, limiter, login_manager, migrate

    settings = settings or Settings.from_env()
    app = Flask(__name__, instance_path=str(settings.instance_path))
    app.config.from_mapping(
        SECRET_KEY=settings.secret_key,
        TENURE_SETTINGS=settings,
        TESTING=settings.testing,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_HTTPONLY=True,
        # Behind a TLS-terminating proxy, cookies travel only over HTTPS.
        SESSION_COOKIE_SECURE=settings.proxy_hops > 0,
        REMEMBER_COOKIE_SECURE=settings.proxy_hops > 0,
        # Bodies larger than this are refused with 413 before any view reads them.
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        # The token is bound to the session; a working day lets a form stay open.
        WTF_CSRF_TIME_LIMIT=12 * 3600,
        API_TITLE="Tenure",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        # Served from the swagger-ui-bundle package: no CDN at run time.
        OPENAPI_SWAGGER_UI_URL="/api/docs-assets/",
        API_SPEC_OPTIONS={
            "info": {"description": "Tenure's JSON API. Authenticate with `Bearer <API key>`."},
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
        },
        RATELIMIT_STORAGE_URI=redis_client.limiter_storage_uri(settings),
        RATELIMIT_KEY_PREFIX="tenure",
        RATELIMIT_SWALLOW_ERRORS=True,
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        RATELIMIT_HEADERS_ENABLED=True,
        BABEL_DEFAULT_LOCALE="en",
        BABEL_DEFAULT_TIMEZONE=settings.timezone,
    )
    app.config.update(config_overrides)
    if not app.config["TESTING"]:
        logging.basicConfig(
            level=settings.log_level,
            format="%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
        )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _RequestIdFilter) for f in handler.filters):
            handler.addFilter(_RequestIdFilter())
        if not any(isinstance(f, PhoneMaskFilter) for f in handler.filters):
            handler.addFilter(PhoneMaskFilter())

    if settings.proxy_hops:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app,
            x_for=settings.proxy_hops,
            x_proto=settings.proxy_hops,
            x_host=settings.proxy_hops,
        )
    app.url_map.converters["id"] = IdConverter
    app.url_map.converters["anything"] = AnythingConverter
    db.init_app(app, settings.database_url)
    migrate.init_app(
        app,
        db,
        directory=str(Path(__file__).resolve().parent.parent / "migrations"),
        render_as_batch=True,
        compare_type=True,
    )
    redis_client.init_app(app, settings)
    login_manager.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)
    babel.init_app(app, locale_selector=_select_locale)
    app.jinja_env.globals["get_locale"] = get_locale
    app.jinja_env.filters["numberformat"] = format_number  # 1,234,567 per locale
    api.init_app(app)

    from app.api import register_api
    from app.auth.web import bp as auth_bp
    from app.cli import register_cli
    from app.health import bp as health_bp
    from app.hooks import bp as hooks_bp
    from app.web import bp as web_bp

    register_api(api)
    from app import segment

    segment.init_app(app)
    from app.segment.openapi import document

    document(api.spec)
    csrf.exempt(health_bp)
    csrf.exempt(hooks_bp)  # providers authenticate by the URL's token and their signature
    app.register_blueprint(hooks_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(web_bp)
    register_cli(app)
    _register_request_ids(app)
    _register_security_headers(app)
    _refuse_nul_characters(app)
    if settings.redis_url is None and not settings.testing:
        _start_embedded_redis_on_first_request(app)

    @app.get("/api/docs-assets/<path:filename>")
    def docs_assets(filename: str):
        return send_from_directory(swagger_ui_path, filename, max_age=86400)

    return app


def _select_locale() -> str | None:
    from flask_login import current_user

    if getattr(current_user, "locale", None):
        return current_user.locale
    return request.accept_languages.best_match(["zh_CN", "zh", "en"]) or "en"


def _register_request_ids(app: Flask) -> None:
    @app.before_request
    def assign_request_id() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex

    @app.after_request
    def echo_request_id(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        return response


def _start_embedded_redis_on_first_request(app: Flask) -> None:
    """A web process needs the shared embedded Redis before its first login attempt,
    so that throttling counts across processes; CLI commands should not start it."""
    from app.redis_client import get_redis
    from app.redis_server import EmbeddedRedisError

    @app.before_request
    def ensure_redis() -> None:
        try:
            get_redis()
        except (EmbeddedRedisError, OSError) as exc:
            log.warning("embedded redis not started: %s", exc)


def _refuse_nul_characters(app: Flask) -> None:
    """PostgreSQL text cannot hold NUL (0x00): refuse it at the door, in the query
    string or a text body, rather than fail at the database with a 500."""

    @app.before_request
    def no_nul() -> None:
        if b"%00" in request.query_string or b"\x00" in request.query_string:
            abort(400, "The query string contains a NUL character (%00), which text cannot hold.")
        if request.mimetype != "multipart/form-data" and request.content_length:
            body = request.get_data(cache=True)
            if b"\x00" in body or b"\\u0000" in body or b"%00" in body:
                abort(400, "The body contains a NUL character (\\u0000), which text cannot hold.")


def _register_security_headers(app: Flask) -> None:
    @app.after_request
    def security_headers(response):
        # No framing (clickjacking of the revoke and role forms), no MIME sniffing.
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response


class IdConverter(IntegerConverter):
    """Row ids in URLs: an id past the database's integer range is a 404, not a 500."""

    def __init__(self, url_map, *args, **kwargs) -> None:
        super().__init__(url_map, min=1, max=2**31 - 1)


class AnythingConverter(PathConverter):
    """The rest of the path, slashes included, even a first one: names chosen by
    clients (a track event called "/cart")."""

    regex = ".+"
    part_isolating = False


class PhoneMaskFilter(logging.Filter):
    """Masks phone numbers in every log line, whatever wrote it (an SDK, a library's
    debug output, a careless message): the line is formatted, then masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_phones(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # A traceback may quote SQL parameters: format it here, masked.
            record.exc_text = mask_phones(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = mask_phones(record.exc_text)
        return True


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True
