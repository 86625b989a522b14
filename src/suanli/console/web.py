"""The web console's routes, under `/console`: server-rendered pages (Jinja2) with htmx for live
parts and ECharts for charts and the map, served from the package's own static folder (the
front-end libraries are installed there from npm by `make`; nothing comes from a CDN).

Sign-in takes a token and keeps it in an HttpOnly, SameSite=Strict cookie; every page then acts
as that token's principal through the same services and the same checks as the API, so a page
shows exactly what the API would (a consumer's task page 404s for anyone else's task). The
language is a cookie too (`zh` or `en`, default from the browser). Pages live in modules of
this package, each with an `install(console)` function; this module holds what they share.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote as url_quote

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from suanli.console import i18n
from suanli.errors import SuanliError
from suanli.services.core import Forbidden, NotFound, Unauthorized
from suanli.store.models import Principal

HERE = Path(__file__).parent
PREFIX = "/console"
TOKEN_COOKIE = "suanli_token"
LANG_COOKIE = "suanli_lang"
R = TypeVar("R")
Runner = Callable[[str, bool, Callable[[Session, Principal], R]], Awaitable[R]]


class SignInRequired(Exception):
    """No valid token cookie: the page redirects to the sign-in form."""


@dataclass
class Console:
    """What the console's pages share: the app's unit of work, templates, the router."""

    run: Runner[Any]
    templates: Jinja2Templates
    router: APIRouter
    wake: Callable[[], None]

    def language(self, request: Request) -> str:
        return i18n.pick_language(
            request.cookies.get(LANG_COOKIE), request.headers.get("accept-language")
        )

    async def act(
        self, request: Request, write: bool, work: Callable[[Session, Principal], R]
    ) -> R:
        """Run `work` as the signed-in principal (SignInRequired when there is none)."""
        token = request.cookies.get(TOKEN_COOKIE)
        if not token:
            raise SignInRequired
        try:
            result: R = await self.run(token, write, work)
        except Unauthorized:
            raise SignInRequired from None
        return result

    def page(
        self,
        request: Request,
        template: str,
        who: Principal | None,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        language = self.language(request)
        return self.templates.TemplateResponse(
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
                **context,
            },
            status_code=status,
        )


def install(app: FastAPI, run: Runner[Any], wake: Callable[[], None]) -> None:
    """Mount the console on `app`; `run(token, write, work)` is the app's unit of work."""
    templates = Jinja2Templates(directory=HERE / "templates")
    console = Console(run, templates, APIRouter(prefix=PREFIX, include_in_schema=False), wake)
    router = console.router

    @router.get("", response_class=HTMLResponse)
    @router.get("/", response_class=HTMLResponse)
    async def home(request: Request) -> Response:
        who = await console.act(request, False, lambda session, who: who)
        start = {"operator": "overview", "provider": "sites"}.get(who.role, "tasks")
        return RedirectResponse(f"{PREFIX}/{start}", status_code=303)

    @router.get("/signin", response_class=HTMLResponse)
    async def signin_form(request: Request, next: str = "") -> Response:
        return console.page(request, "signin.html", None, error=None, next=next)

    @router.post("/signin", response_class=HTMLResponse)
    async def signin(
        request: Request, token: str = Form(max_length=200), next: str = Form("", max_length=500)
    ) -> Response:
        token = token.strip()
        try:
            await run(token, False, lambda session, who: who)
        except SuanliError:
            return console.page(
                request, "signin.html", None, status=401, error="signin.bad", next=next
            )
        target = next if next.startswith(f"{PREFIX}/") and "//" not in next else f"{PREFIX}/"
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            TOKEN_COOKIE,
            token,
            httponly=True,
            samesite="strict",  # no other site can make the browser send it (no CSRF)
            secure=request.url.scheme == "https",
            max_age=7 * 24 * 3600,
        )
        return response

    @router.post("/signout")
    async def signout() -> Response:
        response = RedirectResponse(f"{PREFIX}/signin", status_code=303)
        response.delete_cookie(TOKEN_COOKIE)
        return response

    @router.post("/language")
    async def language(
        request: Request, lang: str = Form(max_length=5), back: str = Form("")
    ) -> Response:
        chosen = lang if lang in i18n.LANGUAGES else i18n.DEFAULT_LANGUAGE
        target = back if back.startswith(PREFIX) else f"{PREFIX}/"
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(LANG_COOKIE, chosen, samesite="strict", max_age=365 * 24 * 3600)
        return response

    from suanli.console import pages_money, pages_network, pages_tasks, pages_twin

    for module in (pages_tasks, pages_network, pages_money, pages_twin):
        module.install(console)

    app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.exception_handler(SignInRequired)
    async def to_signin(request: Request, exc: SignInRequired) -> Response:
        if request.headers.get("hx-request"):  # htmx fragments: tell the page to reload
            return Response(status_code=401, headers={"HX-Redirect": f"{PREFIX}/signin"})
        back = url_quote(request.url.path)
        return RedirectResponse(f"{PREFIX}/signin?next={back}", status_code=303)


async def problem(console: Console, request: Request, exc: SuanliError) -> HTMLResponse:
    """A page for a refused action: 404 for what the principal may not see, 403, else 400."""
    status = 404 if isinstance(exc, NotFound) else 403 if isinstance(exc, Forbidden) else 400
    language = console.language(request)
    message = exc.message_zh if language == "zh" else exc.message_en
    return console.page(request, "error.html", None, status=status, message=message)
