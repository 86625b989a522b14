"""The web console's routes, under `/console`: server-rendered pages (Jinja2) with htmx for live
parts and ECharts for charts and the map, served from the package's own static folder (the
front-end libraries are installed there from npm by `make`; nothing comes from a CDN).

Sessions. Sign-in takes a token and opens a server-side session (`services.sessions`): the
browser gets only a random session id, in an HttpOnly, SameSite=Strict cookie (Secure under
https) that lives 12 hours from sign-in; the token itself is never stored in the browser.
Signing out ends the session on the server, so a copied cookie stops working. Every page then
acts as the session's principal through the same services and the same checks as the API, so a
page shows exactly what the API would (a consumer's task page 404s for anyone else's task).

Cross-site requests. SameSite does not separate two ports of one host, so every state-changing
request (POST/PUT/PATCH/DELETE) is checked twice before its handler runs:
* its Origin (else its Referer) must be this server's own, and a browser's `Sec-Fetch-Site`
  must say same-origin: anything else is refused 403;
* it must carry the session's CSRF token, as the `csrf` form field (every form has it hidden)
  or the `X-CSRF-Token` header (htmx sends it from `hx-headers` on <body>). Sign-in and the
  language switch, which work without a session, take instead a pre-session token that is
  both in a cookie and in the form (double submit); sign-in also needs an Origin or Referer.
Every response gets the security headers of `SecurityHeaders`; console pages a Content Security
Policy that allows no inline script (page data travels in <script type="application/json">
blocks read by static/console.js). The language is a cookie too (`zh` or `en`, default from
the browser). Pages live in modules of this package, each with an `install(console)`
function; this module holds what they share.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote as url_quote
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from suanli.console import i18n
from suanli.errors import SuanliError
from suanli.services import sessions
from suanli.services.core import Actor, Forbidden, NotFound, Unauthorized
from suanli.services.readmodels import Viewer, viewer

HERE = Path(__file__).parent
PREFIX = "/console"
SESSION_COOKIE = "suanli_session"
CSRF_COOKIE = "suanli_csrf"  # the pre-session token (double submit) of sign-in and language
LEGACY_TOKEN_COOKIE = "suanli_token"  # older consoles kept the raw token: cleared at sign-in
LANG_COOKIE = "suanli_lang"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PRE_SESSION_PATHS = frozenset({f"{PREFIX}/signin", f"{PREFIX}/language"})
CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",  # no inline script, no eval
        "style-src 'self' 'unsafe-inline'",  # ECharts' tooltips carry style attributes
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS = (  # on every response of the app
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
)
HSTS = "max-age=31536000"
R = TypeVar("R")
UnitOfWork = Callable[[bool], AbstractContextManager[Session]]


class SignInRequired(Exception):
    """No live session: the page redirects to the sign-in form."""


class CrossSiteRefused(Exception):
    """A state-changing request from another origin, or without the right CSRF token."""


class SecurityHeaders:
    """Pure ASGI middleware: nosniff, X-Frame-Options DENY and Referrer-Policy on every
    response; on the console's pages also the Content Security Policy (frame-ancestors 'none')
    and `Cache-Control: no-store`; HSTS when the request came over https. The API's JSON and
    its /docs page keep working (/docs needs its CDN scripts, so it gets no CSP)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        console = path == PREFIX or path.startswith(f"{PREFIX}/")
        page = console and not path.startswith(f"{PREFIX}/static/")
        https = scope.get("scheme") == "https"

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS:
                    headers.setdefault(name, value)
                if console:
                    headers.setdefault("Content-Security-Policy", CSP)
                if page:
                    headers.setdefault("Cache-Control", "no-store")
                if https:
                    headers.setdefault("Strict-Transport-Security", HSTS)
            await send(message)

        await self.app(scope, receive, sending)


def own_origin(request: Request) -> str:
    """This server's origin as the browser sees it (scheme and Host of the request)."""
    return f"{request.url.scheme}://{request.url.netloc}"


def _origin_of(request: Request) -> str | None:
    """The request's Origin, else its Referer's origin; None when it sends neither."""
    origin = request.headers.get("origin")
    if origin is not None:
        return origin
    referer = request.headers.get("referer")
    if not referer:
        return None
    parts = urlsplit(referer)
    return f"{parts.scheme}://{parts.netloc}"


def _same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


@dataclass
class Console:
    """What the console's pages share: the app's unit of work, templates, the router."""

    unit_of_work: UnitOfWork
    templates: Jinja2Templates
    router: APIRouter
    wake: Callable[[], None]

    def language(self, request: Request) -> str:
        return i18n.pick_language(
            request.cookies.get(LANG_COOKIE), request.headers.get("accept-language")
        )

    def _acted(
        self, cookie: str, write: bool, work: Callable[[Session, Actor], R]
    ) -> tuple[R, str]:
        with self.unit_of_work(write) as session:
            who, row = sessions.resolve(session, cookie)
            return work(session, who), row.csrf

    async def act(self, request: Request, write: bool, work: Callable[[Session, Actor], R]) -> R:
        """Run `work` as the session's principal in one unit of work (SignInRequired when
        there is no live session). `work` reads through `services.readmodels` and acts through
        the services; it hands the principal back to them and returns plain values."""
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            raise SignInRequired
        try:
            result, csrf = await run_in_threadpool(self._acted, cookie, write, work)
        except Unauthorized:
            raise SignInRequired from None
        request.state.csrf = csrf  # the page's forms carry it
        return result

    async def viewer(self, request: Request) -> Viewer:
        """Who the session acts as (SignInRequired when there is no live session)."""
        return await self.act(request, False, lambda session, who: viewer(who))

    def _session_csrf(self, cookie: str) -> str | None:
        """The live session's CSRF token; None when the session is not live."""
        with self.unit_of_work(False) as session:
            try:
                return sessions.resolve(session, cookie)[1].csrf
            except Unauthorized:
                return None

    async def guard(self, request: Request) -> None:
        """The cross-site checks of every state-changing request (see the module's doc)."""
        if request.method in SAFE_METHODS:
            return
        origin = _origin_of(request)
        if origin is not None and origin != own_origin(request):
            raise CrossSiteRefused
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            raise CrossSiteRefused
        given = request.headers.get(CSRF_HEADER)
        if given is None:
            form = await request.form()
            field = form.get(CSRF_FIELD)
            given = field if isinstance(field, str) else None
        pre_session = request.url.path in PRE_SESSION_PATHS
        if pre_session and _same(request.cookies.get(CSRF_COOKIE), given):
            if request.url.path == f"{PREFIX}/signin" and origin is None:
                raise CrossSiteRefused  # login CSRF: a browser always says where it posts from
            return
        cookie = request.cookies.get(SESSION_COOKIE)
        expected = await run_in_threadpool(self._session_csrf, cookie) if cookie else None
        if expected is None and not pre_session:
            raise SignInRequired
        if not _same(expected, given):
            raise CrossSiteRefused

    def csrf_token(self, request: Request) -> str:
        """The CSRF token a page's forms carry: the session's, else the pre-session one (made
        now, and set as a cookie by `page`, when the browser has none)."""
        session_csrf = getattr(request.state, "csrf", None)
        if session_csrf:
            return str(session_csrf)
        pre = getattr(request.state, "pre_csrf", None) or request.cookies.get(CSRF_COOKIE)
        if not pre or len(pre) > 100:
            pre = secrets.token_urlsafe(32)
            request.state.new_pre_csrf = pre
        request.state.pre_csrf = pre
        return str(pre)

    def page(
        self,
        request: Request,
        template: str,
        who: Viewer | None,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        language = self.language(request)
        csrf = self.csrf_token(request)
        response = self.templates.TemplateResponse(
            request,
            template,
            {
                "lang": language,
                "t": lambda key: i18n.translate(key, language),
                "number": lambda v, d=0: i18n.number(v, language, d),
                "money": lambda fen: i18n.money(fen, language),
                "when": lambda m: i18n.when(m, language),
                "who": who,
                "prefix": PREFIX,
                "path": request.url.path,
                "csrf": csrf,
                **context,
            },
            status_code=status,
        )
        fresh = getattr(request.state, "new_pre_csrf", None)
        if fresh:
            response.set_cookie(
                CSRF_COOKIE,
                fresh,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
                path=PREFIX,
            )
        return response


def install(app: FastAPI, unit_of_work: UnitOfWork, wake: Callable[[], None]) -> None:
    """Mount the console on `app`; `unit_of_work(write)` is the app's transaction."""
    templates = Jinja2Templates(directory=HERE / "templates")
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    console = Console(unit_of_work, templates, router, wake)
    router.dependencies.append(Depends(console.guard))

    def secure(request: Request) -> bool:
        return request.url.scheme == "https"

    @router.get("", response_class=HTMLResponse)
    @router.get("/", response_class=HTMLResponse)
    async def home(request: Request) -> Response:
        who = await console.viewer(request)
        start = {"operator": "overview", "provider": "sites"}.get(who.role, "tasks")
        return RedirectResponse(f"{PREFIX}/{start}", status_code=303)

    @router.get("/signin", response_class=HTMLResponse)
    async def signin_form(request: Request, next: str = "") -> Response:
        return console.page(request, "signin.html", None, error=None, next=next)

    def open_session(token: str, previous: str | None) -> sessions.Opened:
        with unit_of_work(True) as session:
            opened = sessions.open_session(session, token)
            if previous:  # signing in again ends the session this browser had
                sessions.end_session(session, previous)
            return opened

    @router.post("/signin", response_class=HTMLResponse)
    async def signin(
        request: Request, token: str = Form(max_length=200), next: str = Form("", max_length=500)
    ) -> Response:
        previous = request.cookies.get(SESSION_COOKIE)
        try:
            opened = await run_in_threadpool(open_session, token.strip(), previous)
        except sessions.AgentTokenRefused:
            return console.page(
                request, "signin.html", None, status=403, error="signin.agent", next=next
            )
        except SuanliError:
            return console.page(
                request, "signin.html", None, status=401, error="signin.bad", next=next
            )
        target = next if next.startswith(f"{PREFIX}/") and "//" not in next else f"{PREFIX}/"
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            opened.cookie,
            httponly=True,
            samesite="strict",
            secure=secure(request),
            path=PREFIX,
            max_age=int(sessions.SESSION_TTL.total_seconds()),
        )
        response.delete_cookie(CSRF_COOKIE, path=PREFIX)  # spent: the session has its own
        response.delete_cookie(LEGACY_TOKEN_COOKIE)
        return response

    def close_session(cookie: str) -> None:
        with unit_of_work(True) as session:
            sessions.end_session(session, cookie)

    @router.post("/signout")
    async def signout(request: Request) -> Response:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            await run_in_threadpool(close_session, cookie)
        response = RedirectResponse(f"{PREFIX}/signin", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        response.delete_cookie(LEGACY_TOKEN_COOKIE)
        return response

    @router.post("/language")
    async def language(
        request: Request, lang: str = Form(max_length=5), back: str = Form("", max_length=500)
    ) -> Response:
        chosen = lang if lang in i18n.LANGUAGES else i18n.DEFAULT_LANGUAGE
        target = back if back.startswith(PREFIX) and "//" not in back else f"{PREFIX}/"
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            LANG_COOKIE, chosen, samesite="strict", secure=secure(request), max_age=365 * 24 * 3600
        )
        return response

    from suanli.console import (
        pages_forecasts,
        pages_money,
        pages_network,
        pages_statements,
        pages_tasks,
        pages_twin,
    )

    pages = (pages_tasks, pages_network, pages_money, pages_twin, pages_statements, pages_forecasts)
    for module in pages:
        module.install(console)

    app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(SignInRequired)
    async def to_signin(request: Request, exc: SignInRequired) -> Response:
        response: Response
        if request.headers.get("hx-request"):  # htmx fragments: tell the page to reload
            response = Response(status_code=401, headers={"HX-Redirect": f"{PREFIX}/signin"})
        elif request.method in SAFE_METHODS:
            back = url_quote(request.url.path)
            response = RedirectResponse(f"{PREFIX}/signin?next={back}", status_code=303)
        else:  # a form posted after its session ended: sign in again, then start over
            response = RedirectResponse(f"{PREFIX}/signin", status_code=303)
        if request.cookies.get(SESSION_COOKIE):
            response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    @app.exception_handler(CrossSiteRefused)
    async def refused(request: Request, exc: CrossSiteRefused) -> Response:
        message = i18n.translate("csrf.refused", console.language(request))
        if request.headers.get("hx-request"):
            return Response(message, status_code=403, media_type="text/plain; charset=utf-8")
        return console.page(request, "error.html", None, status=403, message=message)


async def problem(console: Console, request: Request, exc: SuanliError) -> HTMLResponse:
    """A page for a refused action: 404 for what the principal may not see, 403, else 400."""
    status = 404 if isinstance(exc, NotFound) else 403 if isinstance(exc, Forbidden) else 400
    language = console.language(request)
    message = exc.message_zh if language == "zh" else exc.message_en
    return console.page(request, "error.html", None, status=status, message=message)
