"""The API fuzzed by schemathesis against the `/openapi.json` it serves (issue 9, Tests): the
monitors, maintenance, incidents, channels, deliveries, status pages, queue, SLA and badge
routes and the public pages, on a real port with an admin token: for any input drawn, valid by
the document or not, no answer is a 5xx, and every error is a JSON body that says what went
wrong, or, from a badge, a badge. (A channel's test route waits for a notifier to send it and
a page's live stream lasts as long as its client: they are left out.)"""

from __future__ import annotations

import asyncio
from typing import Any
from xml.etree import ElementTree

import aiohttp
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from api import tokens
from api.app import make_app
from engine.keys import Keys
from executors.kinds import SCHEMA
from tests.support.helpers import store_monitors
from tests.support.servers import api_client, serve_app

# Per operation and mode (valid and invalid input): about 10 s for the whole API on two cores.
EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 10}
SEEDED = {"id": "web", "kind": "http", "interval": "10s", "http": {"url": "http://127.0.0.1:9/"}}


FUZZED = ("/api/v1/monitors", "/api/v1/maintenance", "/api/v1/incidents", "/api/v1/channels",
          "/api/v1/deliveries", "/api/v1/status-pages", "/api/v1/queue", "/api/v1/sla",
          "/badge/", "/status/")
# A live stream of a page answers for as long as the client stays.
NOT_FUZZED = ("/api/v1/channels/{channel_id}/test", "/status/{page_id}/events")
SVG = "image/svg+xml"


def is_badge(body: bytes) -> bool:
    """An SVG badge: a badge's errors are badges too (a "not found" one, say), for an <img>."""
    root = ElementTree.fromstring(body)
    return root.tag == "{http://www.w3.org/2000/svg}svg" and root.find(
        "{http://www.w3.org/2000/svg}title") is not None


def fuzz(document: dict[str, Any], url: str, token: str) -> None:
    """Every operation of those routes; fail on a 5xx or an error that is not JSON."""
    schema = schemathesis.openapi.from_dict(document, config=schemathesis.Config())
    operations = [r.ok() for r in schema.get_all_operations()
                  if r.ok().path.startswith(FUZZED) and r.ok().path not in NOT_FUZZED]
    # DELETE last: until then the seeded monitor is there for the others to find.
    for operation in sorted(operations, key=lambda o: o.method.upper() == "DELETE"):
        for mode, examples in EXAMPLES.items():
            cases = operation.as_strategy(generation_mode=mode)
            if "{monitor_id}" in operation.path:  # a drawn id hardly ever names a monitor
                cases |= operation.as_strategy(generation_mode=mode,
                                               path_parameters={"monitor_id": SEEDED["id"]})

            @given(case=cases)
            @settings(max_examples=examples, deadline=None, database=None,
                      phases=(Phase.explicit, Phase.generate, Phase.shrink),
                      suppress_health_check=list(HealthCheck))
            def run(case: schemathesis.Case) -> None:
                response = case.call(base_url=url, headers={"Authorization": f"Bearer {token}"})
                where = (f"{case.method} {case.formatted_path} query={case.query!r} "
                         f"headers={case.headers!r} body={case.body!r:.300}")
                assert response.status_code < 500, f"{response.status_code}: {where}"
                if response.status_code >= 400:
                    what = f"{response.status_code} {response.content[:200]!r}: {where}"
                    kind = response.headers.get("content-type", [""])[0]
                    if kind.startswith(SVG):
                        assert case.path.startswith("/badge/"), what
                        assert is_badge(response.content), what
                        return
                    assert kind.startswith("application/json"), what
                    assert "error" in response.json(), what

            run()


@pytest.mark.timeout(300)
async def test_no_input_to_the_api_is_a_server_error(r, pool, ch, clean):
    await pool.execute("TRUNCATE api_tokens")
    token = await tokens.create(pool, "fuzz", "admin")
    await store_monitors(pool, SCHEMA.parse([SEEDED]), source="api")
    async with serve_app(make_app(r, pool, ch, Keys(), SCHEMA)) as url:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/openapi.json") as resp:
            document = await resp.json()
        # schemathesis calls the API synchronously: from a thread, while this loop serves it.
        await asyncio.to_thread(fuzz, document, url, token)


async def test_the_document_gives_the_models_the_api_validates_with(client):
    document = await (await client.get("/openapi.json")).json()
    monitor = SCHEMA.adapter.json_schema(ref_template="#/components/schemas/{model}")
    components = document["components"]["schemas"]
    assert components["Monitor"] == {k: v for k, v in monitor.items() if k != "$defs"}
    assert all(components[name] == model for name, model in monitor["$defs"].items())
    body = document["paths"]["/api/v1/monitors"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Monitor"}
    assert document["paths"]["/api/v1/monitors"]["post"]["security"] == [{"bearer": []}]


async def test_what_the_fuzzer_found_a_nul_character_is_the_clients_error(r, pool, ch, clean):
    """Postgres cannot store NUL in text: a body, a query or a path holding one was a 500."""
    await pool.execute("TRUNCATE api_tokens")
    token = await tokens.create(pool, "nul", "admin")
    async with api_client(r, pool, ch, token=token) as api:
        resp = await api.post("/api/v1/monitors", json={**SEEDED, "tags": ["ok", "a\x00b"]})
        assert resp.status == 422
        assert (await resp.json())["errors"] == [
            {"field": "tags.1", "message": "a NUL character cannot be stored"}]
        resp = await api.put("/api/v1/monitors/web", json={**SEEDED, "http": {"url": "\x00"}})
        assert (await resp.json())["errors"][0]["field"] == "http.url"
        for path in ("/api/v1/monitors?tag=%00", "/api/v1/monitors/a%00b",
                     "/api/v1/monitors/a%00b/uptime"):
            resp = await api.get(path)
            assert (resp.status, resp.content_type) == (400, "application/json"), path
    assert await pool.fetchval("SELECT count(*) FROM monitors") == 0
