"""`GET /openapi.json`: the API's OpenAPI 3.1 document. A monitor's schema is the JSON Schema
of the very pydantic models the API validates bodies with (engine.monitors.MonitorSchema for
this deployment's kinds), so the document cannot drift from what is accepted; the routes and
their answers are written here, next to nothing else.

Files and bodies may also say `interval: 30s` / `timeout: 5s` (engine.monitors); the document
gives the canonical `interval_ms` / `timeout_ms` only.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.badges import DEFAULT_WINDOW, LABEL_MAX, WINDOWS
from api.errors import json_response
from api.monitors import PAGE_DEFAULT
from api.state import SCHEMA
from api.tokens import Scope
from engine.channels import STATES, ChannelSpec
from engine.incidents import LIST_MAX, NOTE_MAX
from engine.maintenance import Window
from engine.monitors import CHANNEL_PATTERN, ID_PATTERN, REGION_PATTERN, MonitorSchema
from engine.queue import PAGE_MAX
from engine.status_pages import PAGE_ID_PATTERN, Page
from engine.streams import ENTRY_ID_PATTERN

OPENAPI_KEY: web.AppKey[dict[str, Any]] = web.AppKey("openapi", dict)
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
ERRORS = {"400": "the body is not JSON, or not an object",
          "401": "no token, or an unknown, revoked or expired one (WWW-Authenticate: Bearer)",
          "403": "the token's scope is not enough (error: insufficient_scope)",
          "404": "no such monitor (or route)", "405": "method not allowed",
          "409": "the monitor exists", "413": "body too large", "422": "a field is invalid",
          "429": "too many requests (Retry-After)"}
# What any route may answer, and what a body, a token brings.
EVERY = ("404", "405")
BODY = ("400", "413", "422")
AUTH = ("401", "403", "429")
MONITOR_ID = {"name": "monitor_id", "in": "path", "required": True,
              "schema": {"type": "string", "pattern": ID_PATTERN}}
ANY_OBJECT = {"type": "object"}
INCIDENT_ID = {"name": "incident_id", "in": "path", "required": True,
               "schema": {"type": "string"}, "description": "monitor id:opened at (epoch ms)"}
INCIDENT_FILTERS = (
    {"name": "state", "in": "query", "required": False, "schema": {"enum": ["open", "resolved"]}},
    {"name": "monitor", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "since", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "opened this long ago or later (24h), or since an ISO 8601 time"},
    {"name": "limit", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": LIST_MAX, "default": 100}})
NOTE = {"type": "object", "required": ["text"], "additionalProperties": False,
        "properties": {"text": {"type": "string", "minLength": 1, "maxLength": NOTE_MAX}}}
WINDOW_ID = {"name": "window_id", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": ID_PATTERN}}
# api.sla: from/to as ISO 8601 (a date alone as `to` takes in that day), 400 days at most.
SLA_QUERY = (
    {"name": "from", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "ISO 8601 date or time (default: 30 days before `to`)"},
    {"name": "to", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "ISO 8601 date or time (default: now); at most 400 days after `from`"},
    {"name": "by", "in": "query", "required": False,
     "schema": {"enum": ["day", "week", "month"], "default": "day"}})
COVERING = {"name": "monitor", "in": "query", "required": False, "schema": {"type": "string"},
            "description": "only the windows that cover this monitor (by id or tag)"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _operation(summary: str, ok: dict[str, str], scope: Scope | None = None,
               body: dict[str, Any] | None = None,
               parameters: tuple[dict[str, Any], ...] = (),
               errors: tuple[str, ...] = ()) -> dict[str, Any]:
    """One operation; `scope` None is an open route, `ok` its success codes."""
    codes = sorted({*EVERY, *errors, *(BODY if body else ()), *(AUTH if scope else ())})
    responses: dict[str, Any] = {code: {"description": text, **_json(ANY_OBJECT)}
                                 for code, text in ok.items()}
    responses.update({code: {"description": ERRORS[code],
                             **_json({"$ref": "#/components/schemas/Error"})}
                      for code in codes})
    op: dict[str, Any] = {"summary": summary, "responses": responses,
                          "parameters": list(parameters),
                          "security": [{"bearer": []}] if scope else []}
    if scope:
        op["description"] = f"Needs a token with scope {scope} or above."
    if body is not None:
        op["requestBody"] = {"required": True, **_json(body)}
    return op


def document(schema: MonitorSchema) -> dict[str, Any]:
    monitor = schema.adapter.json_schema(ref_template="#/components/schemas/{model}")
    components = {**monitor.pop("$defs", {}), "Monitor": monitor, "Error": ERROR,
                  "MaintenanceWindow": Window.model_json_schema(
                      ref_template="#/components/schemas/{model}"),
                  **_status_page_schemas()}
    ref = {"$ref": "#/components/schemas/Monitor"}
    one = f"/api/v1/monitors/{{{MONITOR_ID['name']}}}"
    tag = {"name": "tag", "in": "query", "required": False, "schema": {"type": "string"}}
    listing = (tag, {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": PAGE_MAX,
                                "default": PAGE_DEFAULT}},
               {"name": "after", "in": "query", "required": False,
                "schema": {"type": "string", "pattern": ID_PATTERN},
                "description": "the monitors after this id (a page's `next` carries it)"})
    window = {"name": "window", "in": "query", "required": False,
              "schema": {"type": "string", "default": "24h"}}
    push_token = {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}
    push_status = {"name": "status", "in": "query", "required": False,
                   "schema": {"enum": ["up", "down"], "default": "up"}}
    push_message = {"name": "message", "in": "query", "required": False,
                    "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Vigil", "version": "1"},
        "components": {"schemas": components, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "vigil tokens create NAME --scope read|write|admin"}}},
        "paths": {
            "/api/v1/monitors": {
                "get": _operation("monitors' definitions, a page in id order",
                                  {"200": "`monitors`, and `next`: the URL of the next page, "
                                          "null on the last"},
                                  "read", parameters=listing, errors=("422",)),
                "post": _operation("create a monitor", {"201": "created"}, "write", ref,
                                   errors=("409",)),
            },
            one: {
                "get": _operation("a monitor's definition", {"200": "the monitor"}, "read",
                                  parameters=(MONITOR_ID,)),
                "put": _operation("create or replace a monitor",
                                  {"200": "replaced", "201": "created"}, "write", ref,
                                  (MONITOR_ID,)),
                "patch": _operation("change a monitor (RFC 7386 merge patch)",
                                    {"200": "changed"}, "write", ANY_OBJECT, (MONITOR_ID,)),
                "delete": _operation("delete a monitor", {"204": "deleted"}, "write",
                                     parameters=(MONITOR_ID,)),
            },
            f"{one}/pause": {"post": _operation("pause a monitor", {"200": "paused"}, "write",
                                                parameters=(MONITOR_ID,))},
            f"{one}/resume": {"post": _operation("resume a monitor", {"200": "resumed"},
                                                 "write", parameters=(MONITOR_ID,))},
            f"{one}/status": {"get": _operation(
                "a monitor's status per region, with the probe's error text",
                {"200": "the status"}, "read", parameters=(MONITOR_ID,))},
            f"{one}/uptime": {"get": _operation("uptime and latency over a window",
                                                {"200": "the figures"},
                                                parameters=(MONITOR_ID, window),
                                                errors=("422",))},
            f"{one}/sla": {"get": _operation(
                "SLA per UTC day, week or month and in total: uptime by time and by check "
                "count, downtime, what Vigil could not check, maintenance left out, "
                "incidents and MTTR, latency p50/p95/p99", {"200": "the figures"}, "read",
                parameters=(MONITOR_ID, *SLA_QUERY), errors=("422",))},
            "/api/v1/sla": {"get": _operation(
                "the SLA of every monitor (with the tag), as vigil report prints it",
                {"200": "the figures"}, "read", parameters=(*SLA_QUERY, tag),
                errors=("422",))},
            "/api/v1/status": {"get": {
                **_operation("every monitor's status: public fields, or all with a token",
                             {"200": "the status"}, errors=("401", "429")),
                "security": [{}, {"bearer": []}]}},
            # POST may carry the fields in a JSON, form or text body instead (api.push).
            "/api/v1/push/{token}": {method: _operation(
                "a push monitor's heartbeat", {"200": "recorded", "503": "try again"},
                parameters=(push_token, push_status, push_message), errors=("413", "422", "429"))
                for method in ("get", "post")},
            "/api/v1/incidents": {"get": _operation(
                "incidents, newest first", {"200": "the incidents"}, "read",
                parameters=INCIDENT_FILTERS, errors=("422",))},
            "/api/v1/incidents/{incident_id}": {"get": _operation(
                "an incident with its notes", {"200": "the incident"}, "read",
                parameters=(INCIDENT_ID,))},
            "/api/v1/incidents/{incident_id}/acknowledge": {"post": _operation(
                "acknowledge an incident as the token's name (the first one stays)",
                {"200": "the incident"}, "write", parameters=(INCIDENT_ID,))},
            "/api/v1/incidents/{incident_id}/notes": {"post": _operation(
                "add a note to an incident, by the token's name", {"201": "the incident"},
                "write", NOTE, (INCIDENT_ID,))},
            f"{one}/confirmed": {"get": _operation(
                "a monitor's confirmed status (hysteresis, quorum) and each region's",
                {"200": "the status"}, "read", parameters=(MONITOR_ID,))},
            **_maintenance_paths(),
            **_status_page_paths(),
            **_channel_paths(),
            **_queue_paths(),
            **_badge_paths(),
            **_reference_paths(),
            "/health": {"get": _operation("Redis, Postgres and ClickHouse reachable",
                                          {"200": "all reachable", "503": "one is not"})},
            "/metrics": {"get": {
                "summary": "Prometheus metrics of the roles this process runs, with the stream "
                           "and group gauges read from Redis at the scrape",
                "parameters": [], "security": [],
                "responses": {"200": {
                    "description": "Prometheus text format 0.0.4 (without the stream gauges "
                                   "while Redis is away)",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        },
    }


def _maintenance_paths() -> dict[str, Any]:
    """api.maintenance; a window may also say `duration: 2h` instead of `duration_ms`."""
    ref = {"$ref": "#/components/schemas/MaintenanceWindow"}
    one = "/api/v1/maintenance/{window_id}"
    return {
        "/api/v1/maintenance": {
            "get": _operation("every maintenance window, with when it runs next",
                              {"200": "the windows"}, "read", parameters=(COVERING,)),
            "post": _operation("create a maintenance window", {"201": "created"}, "write",
                               ref, errors=("409",)),
        },
        one: {
            "get": _operation("a maintenance window, with when it runs next",
                              {"200": "the window"}, "read", parameters=(WINDOW_ID,)),
            "put": _operation("create or replace a maintenance window",
                              {"200": "replaced", "201": "created"}, "write", ref,
                              (WINDOW_ID,)),
            "delete": _operation("delete a maintenance window", {"204": "deleted"}, "write",
                                 parameters=(WINDOW_ID,)),
        },
    }


def _status_page_schemas() -> dict[str, Any]:
    page = Page.model_json_schema(ref_template="#/components/schemas/{model}")
    return {**page.pop("$defs", {}), "StatusPage": page}


def _status_page_paths() -> dict[str, Any]:
    """api.status_pages (a group's monitor may also be written as its id alone), and the
    public pages (api.page, api.live): HTML, their assets, and the live stream."""
    ref = {"$ref": "#/components/schemas/StatusPage"}
    page_id = {"name": "page_id", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": PAGE_ID_PATTERN}}
    one = "/api/v1/status-pages/{page_id}"

    def served(summary: str, media: str, *parameters: dict[str, Any]) -> dict[str, Any]:
        op = _operation(summary, {"200": summary}, parameters=parameters)
        op["responses"]["200"] = {"description": summary,
                                  "content": {media: {"schema": {"type": "string"}}}}
        return {"get": op}

    return {
        "/api/v1/status-pages": {
            "get": _operation("every status page's definition", {"200": "the pages"}, "read"),
            "post": _operation("create a status page", {"201": "created"}, "write", ref,
                               errors=("409",)),
        },
        one: {
            "get": _operation("a status page's definition", {"200": "the page"}, "read",
                              parameters=(page_id,)),
            "put": _operation("create or replace a status page",
                              {"200": "replaced", "201": "created"}, "write", ref, (page_id,)),
            "delete": _operation("delete a status page", {"204": "deleted"}, "write",
                                 parameters=(page_id,)),
        },
        "/": served("the status page `default`, else a list of the pages", "text/html"),
        "/status/{page_id}": served("a status page (public: status, history, incidents, "
                                    "maintenance; probe details only of monitors with "
                                    "public_details)", "text/html", page_id),
        "/status/{page_id}/events": served(
            "Server-Sent Events of the page's monitors: `status` (monitor_id, status, "
            "since_ms) and `incident` (monitor_id, incident_id, state, opened_ms, "
            "resolved_ms); 503 when too many streams are open", "text/event-stream", page_id),
        "/static/status-page.css": served("the status pages' stylesheet", "text/css"),
        "/static/status-page.js": served("the status pages' live updates", "text/javascript"),
    }


CHANNEL_ID = {"name": "channel_id", "in": "path", "required": True,
              "schema": {"type": "string", "pattern": CHANNEL_PATTERN}}
DELIVERY_FILTERS = (
    {"name": "state", "in": "query", "required": False, "schema": {"enum": list(STATES)}},
    {"name": "event", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "the event id (engine.events.event_id)"},
    {"name": "channel", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "limit", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}})


def _channel_paths() -> dict[str, Any]:
    """api.channels; a channel may also say `resend_every: 1h` instead of `resend_every_ms`.
    Its url and secret are write-only (REDACTED in answers; REDACTED in a PUT keeps them)."""
    body = ChannelSpec.model_json_schema()
    one = "/api/v1/channels/{channel_id}"
    return {
        "/api/v1/channels": {
            "get": _operation("every notification channel", {"200": "the channels"}, "read"),
            "post": _operation("create a channel (a webhook's secret, made when none is "
                               "given, is shown in this answer only)", {"201": "created"},
                               "write", body, errors=("409",)),
        },
        one: {
            "get": _operation("a channel", {"200": "the channel"}, "read",
                              parameters=(CHANNEL_ID,)),
            "put": _operation("create or replace a channel", {"200": "replaced", "201":
                                                               "created"}, "write", body,
                              (CHANNEL_ID,)),
            "delete": _operation("delete a channel and its deliveries", {"204": "deleted"},
                                 "write", parameters=(CHANNEL_ID,)),
        },
        f"{one}/test": {"post": _operation(
            "send a test message through the notifier and wait for its result",
            {"200": "sent, or failed (sent: false)", "202": "queued; no notifier sent it yet"},
            "write", parameters=(CHANNEL_ID,))},
        "/api/v1/deliveries": {"get": _operation(
            "the notification outbox, newest first: state, attempts, last error",
            {"200": "the deliveries"}, "read", parameters=DELIVERY_FILTERS,
            errors=("422",))},
    }


def _badge_paths() -> dict[str, Any]:
    """api.badges: SVG images, not JSON. A monitor not shown on a status page and one that does
    not exist get the same 404 badge; If-None-Match with the badge's ETag gets a 304."""
    svg = {"content": {"image/svg+xml": {"schema": {"type": "string"}}}}
    label = {"name": "label", "in": "query", "required": False,
             "schema": {"type": "string", "minLength": 1, "maxLength": LABEL_MAX},
             "description": "the text on the left (printable)"}
    tag = {"name": "tag", "in": "path", "required": True, "schema": {"type": "string"}}
    window = {"name": "window", "in": "query", "required": False,
              "schema": {"enum": list(WINDOWS), "default": DEFAULT_WINDOW}}

    def badge(summary: str, *parameters: dict[str, Any]) -> dict[str, Any]:
        op = _operation(summary, {"200": "the badge"}, parameters=(*parameters, label),
                        errors=("422",))
        op["responses"].update({
            "200": {"description": "the badge (SVG)", **svg},
            "304": {"description": "not modified: the client's copy (If-None-Match) is it"},
            "404": {"description": "a not found badge: no such monitor (or tag), or none "
                                   "shown on a status page", **svg},
            "503": {"description": "an unavailable badge: a store is away and this badge "
                                   "was not read before (else it says what it said last)",
                    **svg}})
        return {"get": op}

    one = f"/badge/{{{MONITOR_ID['name']}}}"
    return {
        f"{one}/status.svg": badge("a monitor's confirmed status (paused, maintenance, or "
                                   "the evaluator's: up, degraded, down, flapping, unknown)",
                                   MONITOR_ID),
        f"{one}/uptime.svg": badge("uptime over a window, by check count", MONITOR_ID, window),
        f"{one}/latency.svg": badge("latency: the median (p50) of the answered checks "
                                    "of the last 24 hours", MONITOR_ID),
        f"{one}/cert.svg": badge("days until the TLS certificate expires (monitors with "
                                 "public_details only)", MONITOR_ID),
        "/badge/tag/{tag}/status.svg": badge("the worst confirmed status among the shown "
                                             "monitors with the tag", tag),
    }


def _reference_paths() -> dict[str, Any]:
    """api.reference: this document as an HTML page, and its stylesheet."""

    def page(summary: str, media: str) -> dict[str, Any]:
        op = _operation(summary, {"200": summary})
        op["responses"]["200"] = {"description": summary,
                                  "content": {media: {"schema": {"type": "string"}}}}
        return {"get": op}

    return {"/api/docs": page("this document as an HTML page", "text/html"),
            "/api/docs.css": page("the reference page's stylesheet", "text/css")}


def _queue_paths() -> dict[str, Any]:
    """api.queue: the operations view, admin only (a dead letter holds the entry's event as
    it was: a check's spec, a result's probe output)."""
    base = "/api/v1/queue"
    region = {"name": "region", "in": "query", "required": False,
              "schema": {"type": "string", "pattern": REGION_PATTERN},
              "description": "one region; none: every region"}
    entry_id = {"type": "string", "pattern": ENTRY_ID_PATTERN}
    dead_id = {"name": "entry_id", "in": "path", "required": True, "schema": entry_id,
               "description": "the dead letter's id (GET dead-letters: `id`)"}
    page = ({"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": PAGE_MAX, "default": 100}},
            {"name": "after", "in": "query", "required": False, "schema": entry_id,
             "description": "the last id of the previous page (its `next`)"})
    one = {"name": "id", "in": "query", "required": False, "schema": entry_id,
           "description": "purge this dead letter only"}
    shard = {"name": "shard", "in": "query", "required": False,
             "schema": {"type": "string", "pattern": "^[0-9]{1,4}$"},
             "description": "the shard whose dead letters (each shard keeps its own; "
                            "default: the first)"}
    away = {"503": "Redis cannot be reached; retry"}
    return {
        f"{base}/stats": {"get": _operation(
            "every stream (length, oldest entry), group (pending, lag, oldest unread, "
            "consumers and their idle time), the executors by region (last heartbeat, checks "
            "in flight), whether each role keeps up, dispatch paused, the scheduler's "
            "counters", {"200": "the figures", **away}, "admin")},
        f"{base}/health": {"get": _operation(
            "healthy while every role keeps up (its oldest unread entry waited less than "
            "keep_up_ms) and every region with checks waiting has an executor alive",
            {"200": "healthy",
             "503": "not (`problems` says why), or Redis cannot be reached"}, "admin")},
        f"{base}/dead-letters": {
            "get": {**_operation(
                "dead letters, oldest first: the stream and entry id they came from, why, "
                "when, and the entry's event as it was",
                {"200": "a page; `next` continues", **away}, "admin", parameters=(*page, shard),
                errors=("422",)),
                "description": "Needs a token with scope admin: a dead letter's payload is "
                               "the entry's event, a check's spec (URL, headers, body; "
                               "secrets sealed) or a result's probe output."},
            "delete": _operation("purge every dead letter, or the one `id` names",
                                 {"200": "purged: how many", **away}, "admin",
                                 parameters=(one, shard),
                                 errors=("422",)),
        },
        f"{base}/dead-letters/retry": {"post": _operation(
            "put every dead letter back on the stream it came from (each removed in the "
            "same atomic step)", {"200": "retried: how many", **away}, "admin",
            parameters=(shard,), errors=("422",))},
        f"{base}/dead-letters/{{entry_id}}/retry": {"post": _operation(
            "put one dead letter back on the stream it came from, removed in the same "
            "atomic step; that stream's groups read it again", {"200": "retried", **away}, "admin",
            parameters=(dead_id, shard), errors=("422",))},
        f"{base}/pause": {"post": _operation(
            "pause dispatch to one region or all: their slots pass, counted `held`, and no "
            "check is sent", {"200": "what is paused now", **away}, "admin", parameters=(region,),
            errors=("422",))},
        f"{base}/resume": {"post": _operation(
            "resume dispatch to one region, or every pause (none given), from the next slot",
            {"200": "what is still paused", **away}, "admin", parameters=(region,),
            errors=("422",))},
    }


async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI_KEY])


def add_openapi_route(app: web.Application) -> None:
    app[OPENAPI_KEY] = document(app[SCHEMA])
    app.router.add_get("/openapi.json", openapi)
