"""`http:` in a monitor: the spec model and its validators. Validation only checks (a pattern
compiles on RE2, a JSONPath parses, no field that reaches the request line or a header can
smuggle a line into it); what a check runs from is built from a valid spec once per spec
version on the executor (plan.py)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, HttpUrl, JsonValue, field_validator, model_validator

from engine.secrets import Secret
from executors.base import SingleLine, Spec
from executors.patterns import JsonPath, Regex

BODY_CAP = 64 * 1024
# Per check in flight: an executor at concurrency C holds at most C times this in bodies.
BODY_CAP_MAX = 1024 * 1024
# Set by the client itself: a user value would contradict the framing it writes.
MANAGED_HEADERS = frozenset({"connection", "content-length", "transfer-encoding"})
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_STATUS = re.compile(r"^\s*(?:([1-5])xx|(\d{3})\s*-\s*(\d{3})|(\d{3}))\s*$", re.IGNORECASE)
_STATUS_HELP = "expected a status code (200), a range (200-299) or a class (2xx)"
# Headers whose values are credentials: sealed and redacted like password (engine.secrets).
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})


def status_range(item: int | str) -> tuple[int, int]:
    """200 -> (200, 200); "200-299" -> (200, 299); "2xx" -> (200, 299)."""
    if isinstance(item, int):
        low = high = item
    else:
        match = _STATUS.match(item)
        if match is None:
            raise ValueError(f"{item!r}: {_STATUS_HELP}")
        klass, low_s, high_s, single = match.groups()
        if klass:
            low, high = int(klass) * 100, int(klass) * 100 + 99
        else:
            low, high = (int(single), int(single)) if single else (int(low_s), int(high_s))
    if not 100 <= low <= high <= 599:
        raise ValueError(f"{item!r}: status codes are 100-599, a range goes low-high")
    return low, high


def _status_item(item: int | str) -> int | str:
    status_range(item)
    return item


def _header_name(name: str) -> str:
    if not _TOKEN.match(name):
        raise ValueError(f"{name!r} is not a valid header name")
    return name


def request_url(text: str) -> HttpUrl:
    """`text` as a URL a request can go to, or ValueError. Checked as written: pydantic's
    parser (WHATWG's) drops CR, LF and tabs from a URL, reads `http:///path` and `http:path`
    as the host `path`, and keeps port 0, which the check would take for the default port."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in text):
        raise ValueError("a URL cannot hold control characters (CR, LF, tab, NUL ...)")
    try:
        parts = urlsplit(text)
    except ValueError:
        pass  # pydantic's parser says what is wrong with it
    else:
        if parts.scheme.lower() in ("http", "https") and not parts.hostname:
            raise ValueError("the URL has no host: write http(s)://host/path")
    url = HttpUrl(text)
    if url.port == 0:
        raise ValueError("port 0 is not a port a server listens on")
    return url


def _default_status() -> list[int | str]:
    return ["200-399"]


HeaderName = Annotated[str, AfterValidator(_header_name)]


class HttpSpec(Spec):
    """`http:` in a monitor. Every field but `url` is optional.

    Request: url (http/https), method, headers, body, username/password (basic) or
    bearer_token. Response: expected_status (codes, "200-299" ranges, "2xx" classes); keyword
    and keyword_absent (substrings of the body, case-sensitive); regex (RE2 syntax, searched
    in the body: executors.patterns);
    json_path with json_equals (every match equals it) or json_one_of (every match is one of
    them), or alone (it must match something); header_equals / header_regex (name -> exact
    value / pattern searched; any of a repeated header's values may pass). Body assertions see
    the first max_body_bytes only; body_over_cap "fail" makes a longer body a failure
    (`body_too_large`; unset, it is cut there). degraded_ms: slower than this and otherwise
    passing is `degraded`. follow_redirects / max_redirects; verify_tls (off: any certificate,
    and no tls_expiry_ms reported); ca_file (a PEM bundle on the executor, trusted instead of
    the system's store, as the tls kind's); cert_warn_days (a certificate expiring within that
    many days is `degraded`, `tls_expiring`). Unset options stay out of the stored spec.
    """

    url: HttpUrl
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    headers: Annotated[dict[HeaderName, str], Secret(keys=SECRET_HEADERS)] = Field(
        default_factory=dict)
    body: str | None = None
    username: SingleLine | None = Field(default=None, min_length=1)
    password: Annotated[SingleLine | None, Secret()] = None
    bearer_token: Annotated[SingleLine | None, Field(min_length=1), Secret()] = None
    # Without redirects followed, a 3xx is the site answering: up by default.
    expected_status: list[Annotated[int | str, AfterValidator(_status_item)]] = Field(
        default_factory=lambda: _default_status(), min_length=1)
    keyword: str | None = Field(default=None, min_length=1)
    keyword_absent: str | None = Field(default=None, min_length=1)
    regex: Regex | None = None
    json_path: str | None = Field(default=None, min_length=1)
    # null means "not set" (the stored spec carries every field); json_one_of: [null] expects it.
    json_equals: JsonValue = None
    json_one_of: list[JsonValue] | None = Field(default=None, min_length=1)
    header_equals: dict[HeaderName, str] = Field(default_factory=dict)
    header_regex: dict[HeaderName, Regex] = Field(default_factory=dict)
    degraded_ms: int | None = Field(default=None, ge=1)
    follow_redirects: bool = False
    max_redirects: int = Field(default=5, ge=0, le=30)
    verify_tls: bool = True
    max_body_bytes: int = Field(default=BODY_CAP, ge=0, le=BODY_CAP_MAX)
    # None, not "truncate", by default: a default that is stored would change every existing
    # monitor's stored spec (a version bump and a reschedule on the next apply).
    body_over_cap: Literal["truncate", "fail"] | None = None
    ca_file: SingleLine | None = Field(default=None, min_length=1, max_length=4096)
    cert_warn_days: int | None = Field(default=None, ge=0, le=3650)

    @field_validator("url", mode="before")
    @classmethod
    def _as_written(cls, url: Any) -> Any:
        return request_url(url) if isinstance(url, str) else url

    @field_validator("url")
    @classmethod
    def _no_credentials_in_url(cls, url: HttpUrl) -> HttpUrl:
        if url.username or url.password:
            raise ValueError("put credentials in username/password, not in the URL")
        return url

    @field_validator("headers")
    @classmethod
    def _request_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        names = [name.lower() for name in headers]
        if len(set(names)) != len(names):
            raise ValueError("a header is given twice (names are case-insensitive)")
        managed = sorted(MANAGED_HEADERS.intersection(names))
        if managed:
            raise ValueError(f"{managed[0]} is set by the check itself")
        for name, value in headers.items():
            if any(c in value for c in "\r\n\0"):
                raise ValueError(f"header {name}: a value cannot hold CR, LF or NUL")
        return headers

    @field_validator("json_path")
    @classmethod
    def _json_path_parses(cls, path: str | None) -> str | None:
        if path is not None:
            JsonPath.of(path)
        return path

    @model_validator(mode="after")
    def _consistent(self) -> HttpSpec:
        if self.bearer_token and self.username:
            raise ValueError("give username/password or bearer_token, not both")
        if self.password is not None and not self.username:
            raise ValueError("password without username")
        if (self.bearer_token or self.username) and "authorization" in map(str.lower,
                                                                           self.headers):
            raise ValueError("an Authorization header and username/bearer_token: give one")
        if self.ca_file is not None and not self.verify_tls:
            raise ValueError("ca_file needs verify_tls: without it no certificate is checked")
        if self.json_equals is not None and self.json_one_of is not None:
            raise ValueError("give json_equals or json_one_of, not both")
        if (self.json_equals is not None or self.json_one_of is not None) and not self.json_path:
            raise ValueError("json_equals and json_one_of need json_path")
        return self
