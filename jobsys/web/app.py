"""The web console's ASGI application: routes, login, CSRF, security headers, errors.

Built on Starlette (routing, sessions, static files, streaming) with Jinja2
templates. Pages call the same service functions as the CLI commands; this package
has no SQL. Every page answers with the same headers (a CSP with no inline script,
``X-Frame-Options: DENY``, ``nosniff``, a same-origin referrer policy, no caching).

Errors become pages, never a 500 with a traceback: an unknown id is a 404 saying
what was looked for, a refused action (exit 2 in the CLI) a 409 with the refusal, a
database that cannot be reached a 503 (the pages recover when it is back).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobsys import errors
from jobsys.settings import Settings
from jobsys.web import format as fmt
from jobsys.web.auth import ADMIN, LOGIN_ATTEMPTS, Credentials, LoginLimiter, User
from jobsys.web.live import LiveHub

if TYPE_CHECKING:
    from jobsys.config import Config

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
SESSION_COOKIE = "jobsys_web"
SESSION_MAX_AGE_SECONDS = 12 * 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

Handler = Callable[[Request, User], Awaitable[Response]]


@dataclass
class Console:
    """What every request needs: settings, who may log in, the live hub, templates."""

    settings: Settings
    credentials: Credentials
    hub: LiveHub | None
    templates: Jinja2Templates
    logins: LoginLimiter

    def actor_settings(self, user: User) -> Settings:
        """The settings an action runs with: the web user is the actor in the audit."""
        return replace(self.settings, operator=f"web:{user.name}")

    def known_urls(self) -> list[str | None]:
        """The database URLs in play (flag or environment, queues.yaml), for scrubbing
        their passwords from a driver's error."""
        urls = [self.settings.database_url]
        # A broken configuration must not hide the error being shown.
        with contextlib.suppress(Exception):
            urls.append(self.config().queues.database.url)
        return urls

    def config(self, *, with_tasks: bool = False) -> Config:
        """The configuration the services are handed, loaded here at the edge: kept by
        ``load_config`` and read again only when a file changed, so a running console
        follows the files as it did when each service loaded them itself."""
        from jobsys.config.application import load_config

        return load_config(self.settings, with_tasks=with_tasks)


def console(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


class SecurityHeaders:
    """Pure ASGI (streams such as SSE pass through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class Transport:
    """TLS in front of the console: the session cookie gets ``Secure`` when
    ``secure_cookies`` is set, or when the request came over HTTPS. With
    ``trust_proxy`` (only for a console reachable through that proxy alone), a proxy's
    ``X-Forwarded-Proto: https`` counts as HTTPS and the last ``X-Forwarded-For``
    address is the client (the login limit counts per client)."""

    def __init__(self, app: ASGIApp, *, secure_cookies: bool, trust_proxy: bool) -> None:
        self.app, self.secure_cookies, self.trust_proxy = app, secure_cookies, trust_proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.trust_proxy:
            scope = _forwarded(scope)
        secure = self.secure_cookies or scope.get("scheme") == "https"

        async def with_secure(message: Message) -> None:
            if secure and message["type"] == "http.response.start":
                message["headers"] = [
                    (k, v + b"; secure")
                    if k.lower() == b"set-cookie"
                    and v.startswith(SESSION_COOKIE.encode() + b"=")
                    and b"; secure" not in v.lower()
                    else (k, v)
                    for k, v in message.get("headers", [])
                ]
            await send(message)

        await self.app(scope, receive, with_secure)


def _forwarded(scope: Scope) -> Scope:
    headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    scope = dict(scope)
    proto = headers.get(b"x-forwarded-proto", "").split(",")[-1].strip().lower()
    if proto in ("http", "https"):
        scope["scheme"] = proto
    hops = [h.strip() for h in headers.get(b"x-forwarded-for", "").split(",") if h.strip()]
    if hops:
        port = scope["client"][1] if scope.get("client") else 0
        scope["client"] = (hops[-1], port)
    return scope


# --- who is asking -------------------------------------------------------------------


def current_user(request: Request) -> User | None:
    creds = console(request).credentials
    if not creds.configured:
        return User(console(request).settings.operator, ADMIN)
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return creds.by_token(header[7:].strip())
    name, role = request.session.get("user"), request.session.get("role")
    if isinstance(name, str) and isinstance(role, str):
        return User(name, role)
    return None


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


async def csrf_ok(request: Request) -> bool:
    """A POST must echo the session's token (form field or header). Requests that
    authenticate with an Authorization header carry no ambient credentials, so a
    forged cross-site request cannot have one."""
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return True
    expected = request.session.get("csrf")
    if not isinstance(expected, str):
        return False
    given = request.headers.get(CSRF_HEADER)
    if given is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    return given is not None and hmac.compare_digest(given, expected)


# --- rendering -------------------------------------------------------------------------


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    user: User | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    c = console(request)
    full = {
        "user": user,
        "auth": c.credentials.configured,
        "csrf": csrf_token(request),
        # A visitor not logged in (the login page) gets no event stream: /admin/events
        # would answer 401, and the page showed "Live updates interrupted" over the form.
        "live": c.hub is not None and (user is not None or not c.credentials.configured),
        "path": request.url.path,
        "flash": request.session.pop("flash", None),
        **context,
    }
    return c.templates.TemplateResponse(
        request, template, full, status_code=status_code, headers=headers
    )


def problem(
    request: Request,
    status_code: int,
    title: str,
    message: str,
    *,
    hint: str | None = None,
    back: tuple[str, str] | None = None,
    user: User | None = None,
) -> Response:
    return render(
        request,
        "error.html",
        {"title": title, "message": message, "hint": hint, "back": back},
        status_code=status_code,
        user=user,
    )


def _db_unreachable(request: Request, detail: str, user: User | None) -> Response:
    return problem(
        request,
        503,
        "Database unreachable",
        detail,
        hint="The page reloads by itself when the database is back.",
        back=(request.url.path, "Try again"),
        user=user,
    )


def guarded(handler: Handler, *, back: tuple[str, str] | None = None, act: bool = False) -> Any:
    """Wrap a page or action: login, role and CSRF checks, and errors as pages."""
    import psycopg

    async def endpoint(request: Request) -> Response:
        user = current_user(request)
        if user is None:
            if request.method == "GET":
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/admin/login?next={quote(target)}", status_code=303)
            return problem(request, 401, "Log in first", "This page needs a login.")
        if act:
            if not await csrf_ok(request):
                return problem(
                    request,
                    403,
                    "Request refused",
                    "missing or wrong CSRF token: nothing was changed.",
                    hint="Reload the page and submit the form again.",
                    user=user,
                )
            if not user.can_act:
                return problem(
                    request,
                    403,
                    "Read-only",
                    f"{user.name} has the read-only role: nothing was changed.",
                    hint="Ask an operator with the admin role.",
                    user=user,
                )
        try:
            return await handler(request, user)
        except errors.NotFoundError as exc:
            return problem(
                request,
                404,
                "Not found",
                exc.message,
                hint=exc.hint,
                back=back or ("/admin/background_jobs", "Back to the dashboard"),
                user=user,
            )
        except errors.DatabaseUnavailable as exc:
            return _db_unreachable(request, exc.message, user)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            from jobsys.db.url import scrub

            message = str(exc).strip().split("\n")[0]
            return _db_unreachable(request, scrub(message, *console(request).known_urls()), user)
        except errors.RefusedError as exc:
            return problem(
                request, 409, "Refused", exc.message, hint=exc.hint, back=back, user=user
            )
        except errors.JobsysError as exc:
            return problem(
                request, 400, "Cannot do that", exc.message, hint=exc.hint, back=back, user=user
            )

    return endpoint


# --- login ---------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return "/admin/background_jobs"


async def login(request: Request) -> Response:
    c = console(request)
    if not c.credentials.configured:
        return RedirectResponse("/admin/background_jobs", status_code=303)
    nxt = _safe_next(request.query_params.get("next"))
    if request.method == "GET":
        return render(request, "login.html", {"next": nxt, "error": None})
    if not await csrf_ok(request):
        return render(
            request,
            "login.html",
            {"next": nxt, "error": "The form expired; try again."},
            status_code=403,
        )
    form = await request.form()
    name, password, token = (str(form.get(k) or "") for k in ("username", "password", "token"))
    client = request.client.host if request.client else "unknown"
    wait = c.logins.wait_seconds(client, "" if token else name)
    if wait is not None:
        logger.info("web login limited", extra={"action": "web_login_limited"})
        return render(
            request,
            "login.html",
            {
                "next": nxt,
                "error": f"Too many failed logins from this address or for this user: "
                f"wait {wait} s and try again.",
            },
            status_code=429,
            headers={"retry-after": str(wait)},
        )
    user = c.credentials.by_token(token) if token else c.credentials.by_password(name, password)
    if user is None:
        c.logins.failed(client, "" if token else name)
        logger.info("web login refused", extra={"action": "web_login_refused"})
        return render(
            request,
            "login.html",
            {"next": nxt, "error": "Wrong name, password or token."},
            status_code=401,
        )
    request.session.clear()
    request.session.update({"user": user.name, "role": user.role})
    csrf_token(request)  # a new session gets a new token
    logger.info("web login: %s", user.name, extra={"action": "web_login"})
    return RedirectResponse(_safe_next(str(form.get("next") or nxt)), status_code=303)


async def logout(request: Request) -> Response:
    if await csrf_ok(request):
        request.session.clear()
    return RedirectResponse("/admin/login", status_code=303)


async def events(request: Request) -> Response:
    from starlette.responses import StreamingResponse

    if current_user(request) is None:
        return Response("log in first\n", status_code=401, media_type="text/plain")
    hub = console(request).hub
    if hub is None:
        return Response("live updates are off\n", status_code=404, media_type="text/plain")
    return StreamingResponse(
        hub.stream(),
        media_type="text/event-stream",
        headers={"x-accel-buffering": "no"},
    )


async def root(request: Request) -> Response:
    return RedirectResponse("/admin/background_jobs", status_code=303)


async def not_found(request: Request, exc: Exception) -> Response:
    return problem(
        request,
        404,
        "Not found",
        f"no page at {request.url.path}",
        back=("/admin/background_jobs", "Back to the dashboard"),
        user=current_user(request),
    )


def create_app(
    settings: Settings,
    credentials: Credentials,
    *,
    database_url: str | None = None,
    secret_key: str | None = None,
    live: bool = True,
    secure_cookies: bool = False,
    trust_proxy: bool = False,
    login_attempts: str = LOGIN_ATTEMPTS,
) -> Starlette:
    """The console. ``database_url`` feeds the live hub (None: resolved at start-up);
    ``secure_cookies``/``trust_proxy``: see :class:`Transport`; ``login_attempts``:
    failed logins allowed per client and per user (``limits`` notation)."""
    from jobsys.web import actions, pages

    templates = Jinja2Templates(directory=str(HERE / "templates"))
    fmt.install(templates.env)
    state = Console(settings, credentials, None, templates, LoginLimiter(login_attempts))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if live:
            url = database_url or _resolve_url(settings)
            state.hub = LiveHub(url)
            state.hub.start()
        try:
            yield
        finally:
            if state.hub is not None:
                await state.hub.stop()

    routes = [
        Route("/", root),
        Route("/admin", root),
        Route("/admin/login", login, methods=["GET", "POST"]),
        Route("/admin/logout", logout, methods=["POST"]),
        Route("/admin/events", events),
        *pages.routes(),
        *actions.routes(),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(Transport, secure_cookies=secure_cookies, trust_proxy=trust_proxy),
            Middleware(SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=secret_key or secrets.token_urlsafe(32),
                session_cookie=SESSION_COOKIE,
                max_age=SESSION_MAX_AGE_SECONDS,
                same_site="strict",
            ),
        ],
        exception_handlers={404: not_found},
        lifespan=lifespan,
    )
    app.state.console = state
    return app


def _resolve_url(settings: Settings) -> str:
    from jobsys.config.application import load_config
    from jobsys.db.connect import resolve

    return resolve(settings, load_config(settings, with_tasks=False)).url
