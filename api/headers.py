"""Security headers on every response the app sends, errors and aiohttp's own included (a
response-prepare hook, not a middleware, so nothing built after the handler slips past).

Every response: `nosniff`, so a browser never runs a JSON error or a monitor's name as a
script or a page. HTML (the status pages): a policy that loads nothing but the page's own
stylesheet and script (api/static; nothing inline, nothing from elsewhere), connects to its own
origin only (the live updates' EventSource), may not be framed (clickjacking) and sends no
referrer to the links on it.
"""

from __future__ import annotations

from aiohttp import web

EVERY = {"X-Content-Type-Options": "nosniff"}
HTML = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Referrer-Policy": "no-referrer",
}


async def secure(_request: web.Request, response: web.StreamResponse) -> None:
    extra = {**EVERY, **HTML} if response.content_type == "text/html" else EVERY
    for name, value in extra.items():
        response.headers.setdefault(name, value)
