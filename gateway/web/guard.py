"""What every request and response of the web side passes: headers, CSRF, origin, errors.

Takes each request before its handler; produces the response with the security headers
docs/protocol.md §17 names (CSP with no third-party source, HSTS on HTTPS, no-referrer,
no-store, nosniff, no framing), or a Dutch error page in place of any failure: a POST from
another origin or without the CSRF token is refused (403), an unknown path is 404, a body over
the cap 413, and an unexpected exception a plain page without a trace (logged with its type and
frames only: a path holds a token, so the route's name is logged, never the URL).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.observe.logs import get_logger, safe_exception
from gateway.web.site import CSRF_NEW, Site, csrf_ok, message, set_cookie, site_of

log = get_logger("web")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
# Two years, the preload list's minimum; no includeSubDomains: the gateway's host is not the
# owner of its domain's other hosts.
HSTS = "max-age=63072000"
CSRF_HEADER = "X-CSRF-Token"
# A WebAuthn answer is a few kilobytes (attestation "none"); a form is a code and a token.
MAX_BODY = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")
# What reading a malformed body raises (invalid UTF-8 or an unknown charset, a broken
# multipart, JSON nested past Python's recursion limit): the sender's fault, a 400, never a 500.
MALFORMED = (ValueError, LookupError, RecursionError, HttpProcessingError)


class MalformedBody(Exception):
    """A POST's body that does not parse as the type it declares."""


async def read_body(request: web.Request) -> None:
    """Parse a POST's form or JSON body once, before any handler: aiohttp keeps a parsed form,
    and a JSON body that parsed here parses again in the handler. MalformedBody when it does
    not parse."""
    try:
        if request.content_type in FORMS:
            await request.post()
        elif request.content_type == "application/json":
            await request.json()
    except MALFORMED:
        raise MalformedBody from None


def security_headers(secure: bool) -> dict[str, str]:
    """Pure: the headers every response carries; HSTS only where the origin is HTTPS."""
    headers = {
        "Content-Security-Policy": CSP,
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        # WebAuthn's own features default to 'self' already; naming them here makes browsers
        # that do not know one of them log an error on every page.
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
        "Server": "hwc-gateway",
    }
    if secure:
        headers["Strict-Transport-Security"] = HSTS
    return headers


def same_origin(origin: str | None, fetch_site: str | None, ours: str) -> bool:
    """Pure: whether a POST comes from our own pages. The `Origin` header must be ours; under
    `Referrer-Policy: no-referrer` browsers send `Origin: null` even for a same-origin form
    (Fetch, "append a request Origin header"), so then `Sec-Fetch-Site: same-origin`, which a
    page cannot forge, must say so."""
    if origin is not None and origin.strip() != "null":
        return origin.strip().lower() == ours
    return fetch_site == "same-origin"


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: every response, error pages and static files alike."""
    response.headers.update(security_headers(site_of(request).secure))


async def _post_refusal(request: web.Request, site: Site) -> web.Response | None:
    if not same_origin(request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"),
                       site.origin):
        log.warning("web.refused", route=route_name(request), reason="origin")
        return message(request, 403, "Niet toegestaan",
                       "Dit formulier kwam niet van deze website en is daarom niet verwerkt.")
    await read_body(request)
    token = request.headers.get(CSRF_HEADER)
    if token is None and request.content_type in FORMS:
        value = (await request.post()).get("csrf")
        token = value if isinstance(value, str) else None
    if token is None or not csrf_ok(request, token):
        log.warning("web.refused", route=route_name(request), reason="csrf")
        return message(request, 403, "Pagina verlopen",
                       "Deze pagina is verlopen. Open de link uit uw e-mail opnieuw en probeer "
                       "het nog eens.")
    return None


def route_name(request: web.Request) -> str:
    """The route's name for a log line: never the path, which holds the link's token."""
    try:
        return request.match_info.route.name or "unknown"
    except (AttributeError, RuntimeError):
        return "unknown"


_ERRORS = {
    404: ("Pagina niet gevonden",
          "Deze pagina bestaat niet. Controleer of u de hele link uit de e-mail hebt gebruikt."),
    405: ("Dit kan hier niet", "Deze pagina kan zo niet gebruikt worden."),
    413: ("Te veel gegevens", "Er werden meer gegevens verstuurd dan deze pagina aanneemt."),
}


def error_page(request: web.Request, status: int) -> web.Response:
    title, text = _ERRORS.get(status, ("Dat lukte niet", "Uw verzoek kon niet worden verwerkt."))
    return message(request, status, title, text)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Origin and CSRF on every POST; Dutch pages for every error; the CSRF cookie set."""
    site = site_of(request)
    response: web.StreamResponse
    try:
        refusal = await _post_refusal(request, site) if request.method == "POST" else None
        response = refusal if refusal is not None else await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_page(request, exc.status)
    except MalformedBody:
        log.warning("web.refused", route=route_name(request), reason="malformed")
        response = error_page(request, 400)
    except Exception as exc:
        log.error("web.failed", route=route_name(request), **safe_exception(exc))
        response = message(request, 500, "Er ging iets mis",
                           "Er ging bij ons iets mis. Probeer het over een paar minuten opnieuw.")
    seed = request.get(CSRF_NEW)
    if seed is not None:
        set_cookie(response, site, "csrf", seed, None)
    return response
