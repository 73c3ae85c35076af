"""`GET /api/docs`: the API reference as one HTML page, rendered on the server from the very
document `/openapi.json` serves (api.openapi.OPENAPI_KEY), so the page cannot drift from it:
every operation with its summary, who may call it, its parameters, body and answers, then
every schema the document defines.

No script and no asset from elsewhere: the HTML policy (api.headers) allows the app's own
stylesheet only, which is `/api/docs.css`. Every text of the document is escaped where it is
written into the page; a schema is shown as its JSON, a `$ref` in it as a link to the schema.
"""

from __future__ import annotations

import functools
import html
import re
from typing import Any

import orjson
from aiohttp import web

from api.openapi import OPENAPI_KEY

METHODS = ("get", "put", "post", "patch", "delete", "head", "options")
SCHEMA_REF = "#/components/schemas/"
INDENT = "  "


def _e(value: Any) -> str:
    return html.escape(str(value))


def anchor(*parts: str) -> str:
    """An id made of letters, digits and dashes only, the same for the same parts."""
    return re.sub(r"[^A-Za-z0-9]+", "-", "-".join(parts)).strip("-").lower()


def _ref_link(ref: str) -> str:
    if ref.startswith(SCHEMA_REF):
        name = ref[len(SCHEMA_REF):]
        return f'<a href="#{anchor("schema", name)}">{_e(name)}</a>'
    return _e(ref)


def json_html(value: Any, depth: int = 0) -> str:
    """A JSON value as indented, escaped text, each `$ref` a link to its schema."""
    pad, inner = INDENT * depth, INDENT * (depth + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{_e(orjson.dumps(k).decode())}: "
                 + (_ref_link(v) if k == "$ref" and isinstance(v, str)
                    else json_html(v, depth + 1))
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return ("[\n" + ",\n".join(inner + json_html(v, depth + 1) for v in value)
                + f"\n{pad}]")
    return _e(orjson.dumps(value).decode())


def _schema(schema: Any) -> str:
    if isinstance(schema, dict) and set(schema) == {"$ref"} and isinstance(schema["$ref"], str):
        return f"<p>{_ref_link(schema['$ref'])}</p>"
    return f"<pre>{json_html(schema)}</pre>"


def _content(content: dict[str, Any]) -> str:
    return "".join(f"<p>{_e(media)}</p>{_schema(media_type.get('schema', {}))}"
                   for media, media_type in content.items())


def _scheme(name: str, schemes: dict[str, Any]) -> str:
    scheme = schemes.get(name, {})
    if scheme.get("type") == "http" and scheme.get("scheme"):
        return f"a {scheme['scheme']} token"
    return name


def who(operation: dict[str, Any], schemes: dict[str, Any]) -> str:
    """Which token it takes, from the operation's `security` (an empty list: none)."""
    options = operation.get("security", [])
    if not options:
        return "none: open to anyone"
    return ", or ".join(" and ".join(_scheme(name, schemes) for name in option) or "none"
                        for option in options)


def _parameters(parameters: list[dict[str, Any]]) -> str:
    if not parameters:
        return ""
    rows = "".join(
        f"<tr><td><code>{_e(p.get('name', ''))}</code></td><td>{_e(p.get('in', ''))}</td>"
        f"<td>{'yes' if p.get('required') else 'no'}</td>"
        f"<td>{_schema(p.get('schema', {}))}</td>"
        f"<td>{_e(p.get('description', ''))}</td></tr>" for p in parameters)
    return ("<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>required</th>"
            f"<th>schema</th><th>description</th></tr>{rows}</table>")


def _responses(responses: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{_e(code)}</td><td>{_e(answer.get('description', ''))}</td>"
        f"<td>{_content(answer.get('content', {}))}</td></tr>"
        for code, answer in responses.items())
    return ("<h4>Answers</h4><table><tr><th>status</th><th>meaning</th><th>body</th></tr>"
            f"{rows}</table>")


def operation_html(path: str, method: str, operation: dict[str, Any],
                   schemes: dict[str, Any]) -> str:
    body = operation.get("requestBody")
    parts = [f'<section id="{anchor(method, path)}"><h3><span class="method">'
             f"{_e(method.upper())}</span> <code>{_e(path)}</code></h3>",
             f"<p>{_e(operation.get('summary', ''))}</p>"]
    if operation.get("description"):
        parts.append(f"<p>{_e(operation['description'])}</p>")
    parts.append(f"<p>Token: {_e(who(operation, schemes))}</p>")
    parts.append(_parameters(operation.get("parameters", [])))
    if body:
        required = "required" if body.get("required") else "optional"
        parts.append(f"<h4>Body ({required})</h4>{_content(body.get('content', {}))}")
    parts.append(_responses(operation.get("responses", {})))
    parts.append("</section>")
    return "".join(parts)


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, item[method]) for path, item in document.get("paths", {}).items()
            for method in METHODS if method in item]


def render(document: dict[str, Any]) -> str:
    info = document.get("info", {})
    components = document.get("components", {})
    schemes = components.get("securitySchemes", {})
    ops = operations(document)
    title = f"{info.get('title', 'API')} API reference"
    contents = "".join(
        f'<li><a href="#{anchor(method, path)}">{_e(method.upper())} {_e(path)}</a>'
        f" {_e(op.get('summary', ''))}</li>" for path, method, op in ops)
    auth = "".join(f"<li><code>{_e(name)}</code>: {_e(s.get('type', ''))} "
                   f"{_e(s.get('scheme', ''))}. {_e(s.get('description', ''))}</li>"
                   for name, s in schemes.items())
    schemas = "".join(f'<section id="{anchor("schema", name)}"><h3>{_e(name)}</h3>'
                      f"{_schema(schema)}</section>"
                      for name, schema in components.get("schemas", {}).items())
    return ("<!doctype html><html lang=en><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><link rel=stylesheet href=/api/docs.css>"
            f"<h1>{_e(title)}</h1>"
            f"<p>Version {_e(info.get('version', ''))}, from "
            f'<a href="/openapi.json">/openapi.json</a> (OpenAPI '
            f"{_e(document.get('openapi', ''))}).</p>"
            f"<h2>Tokens</h2><ul>{auth}</ul>"
            f"<h2>Routes</h2><ul>{contents}</ul>"
            + "".join(operation_html(path, method, op, schemes) for path, method, op in ops)
            + f"<h2>Schemas</h2>{schemas}</html>")


class Reference:
    """The page of one document, rendered at its first request (about 10 ms on the event
    loop) and kept: an app's document does not change once it is made."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    @functools.cached_property
    def html(self) -> str:
        return render(self.document)


PAGE: web.AppKey[Reference] = web.AppKey("reference", Reference)


async def reference(request: web.Request) -> web.Response:
    return web.Response(text=request.app[PAGE].html, content_type="text/html",
                        headers={"Cache-Control": "public, max-age=300"})


async def stylesheet(_request: web.Request) -> web.Response:
    return web.Response(text=_CSS, content_type="text/css",
                        headers={"Cache-Control": "public, max-age=3600"})


_CSS = ("body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;"
        "line-height:1.4}table{border-collapse:collapse;margin:.5rem 0}"
        "td,th{padding:.3rem .6rem;border-bottom:1px solid #ddd;text-align:left;"
        "vertical-align:top}pre{background:#f6f8fa;padding:.6rem;overflow-x:auto;"
        "font-size:.85rem}td pre{margin:0}section{border-top:1px solid #ccc;margin-top:1.5rem}"
        ".method{font-family:monospace;background:#333;color:#fff;padding:0 .4rem;"
        "border-radius:3px}@media (prefers-color-scheme:dark){body{background:#111;color:#ddd}"
        "pre{background:#222}a{color:#8bf}td,th{border-color:#333}}")


def add_reference_routes(app: web.Application) -> None:
    """After add_openapi_route, whose document it renders."""
    app[PAGE] = Reference(app[OPENAPI_KEY])
    app.router.add_get("/api/docs", reference)
    app.router.add_get("/api/docs.css", stylesheet)
