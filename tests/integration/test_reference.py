"""The API reference page (issue 11 item 7) on the real app: rendered from the very document
/openapi.json serves, every operation on it, nothing the HTML policy refuses, every text
escaped."""

from __future__ import annotations

import html
from html.parser import HTMLParser
from typing import Any

from api.reference import anchor, render

METHODS = ("get", "put", "post", "patch", "delete")
HOSTILE = "<script>alert(1)</script>"


class Tags(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    tags.close()
    return tags


async def test_the_page_lists_every_operation_of_the_document(client):
    document = await (await client.get("/openapi.json")).json()
    resp = await client.get("/api/docs")
    assert (resp.status, resp.content_type) == (200, "text/html")
    page = await resp.text()
    tags = parsed(page)
    ids = {a.get("id") for _, a in tags.tags}
    text = "".join(tags.text)
    operations = [(path, method, item[method]) for path, item in document["paths"].items()
                  for method in METHODS if method in item]
    assert len(operations) > 30
    for path, method, operation in operations:
        assert anchor(method, path) in ids, (method, path)
        start = page.index(f'<section id="{anchor(method, path)}">')
        section = "".join(parsed(page[start:page.index("</section>", start)]).text)
        assert path in section
        assert operation["summary"] in section
        for parameter in operation["parameters"]:
            assert parameter["name"] in section
        for code, answer in operation["responses"].items():
            assert f"{code}{answer['description']}" in section, (method, path, code)
        if "requestBody" in operation:
            assert "Body (required)" in section
    # The routes these pages are made for are on them too.
    assert {"/badge/tag/{tag}/status.svg", "/api/docs"} <= set(document["paths"])
    # Scopes, bodies and schemas.
    assert "Needs a token with scope write or above." in text
    assert anchor("schema", "Monitor") in ids
    for name in document["components"]["schemas"]:
        assert anchor("schema", name) in ids, name
    # Every link inside the page lands on something.
    links = [a["href"] for tag, a in tags.tags if tag == "a" and a.get("href")]
    assert all(link[1:] in ids for link in links if link and link.startswith("#"))


async def test_the_page_needs_nothing_its_policy_refuses(client):
    resp = await client.get("/api/docs")
    page = await resp.text()
    policy = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    tags = parsed(page)
    assert not [t for t, _ in tags.tags if t in ("script", "style", "img", "iframe")]
    assert not [a for _, a in tags.tags if any(k == "style" or k.startswith("on") for k in a)]
    # Its one resource is its own stylesheet, served by the app.
    sheets = [a["href"] for t, a in tags.tags if t == "link"]
    assert sheets == ["/api/docs.css"]
    css = await client.get("/api/docs.css")
    assert (css.status, css.content_type) == (200, "text/css")
    assert "http" not in await css.text()


def test_every_text_of_the_document_is_escaped():
    hostile: dict[str, Any] = {"description": HOSTILE, "type": "string", "default": HOSTILE}
    document = {
        "openapi": "3.1.0", "info": {"title": HOSTILE, "version": HOSTILE},
        "components": {"schemas": {HOSTILE: hostile},
                       "securitySchemes": {HOSTILE: {"type": "http", "scheme": HOSTILE,
                                                     "description": HOSTILE}}},
        "paths": {f"/x/{HOSTILE}": {"get": {
            "summary": HOSTILE, "description": HOSTILE, "security": [{HOSTILE: []}],
            "parameters": [{"name": HOSTILE, "in": "query", "description": HOSTILE,
                            "schema": hostile}],
            "requestBody": {"content": {HOSTILE: {"schema": {
                "$ref": f"#/components/schemas/{HOSTILE}"}}}},
            "responses": {HOSTILE: {"description": HOSTILE, "content": {
                "application/json": {"schema": hostile}}}}}}}}
    page = render(document)
    assert "<script" not in page
    assert page.count(html.escape(HOSTILE)) >= 12
    tags = parsed(page)
    assert {t for t, _ in tags.tags} <= {"html", "meta", "title", "link", "h1", "h2", "h3",
                                         "h4", "p", "a", "ul", "li", "section", "span",
                                         "code", "table", "tr", "th", "td", "pre"}
    # An id or link made of the hostile name is letters, digits and dashes only.
    for _, attrs in tags.tags:
        for name in ("id", "href"):
            value = attrs.get(name)
            assert value is None or set(value) <= set(
                "abcdefghijklmnopqrstuvwxyz0123456789-#/.:_ABCDEFGHIJKLMNOPQRSTUVWXYZ")
