"""The HTTP kind's spec and plan, no network: validation rejects with the field and the reason
and builds nothing; the plan (the first request's bytes, status ranges, compiled patterns) is
built by `KIND.prepare`, once per spec version on the executor."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis

from engine.keys import Keys
from engine.monitors import SpecError
from executors.base import Context
from executors.checker import Checker
from executors.kinds import SCHEMA, http
from executors.kinds.http import chain
from executors.kinds.http.assertions import json_equal
from executors.kinds.http.spec import HttpSpec, status_range
from executors.patterns import Pattern
from tests.support.kind_executor import check_due


@pytest.fixture
def requests_built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every request the HTTP kind builds, by target."""
    built: list[str] = []
    real = chain.build_request

    def counting(method: str, target: str, *args: Any) -> bytes:
        built.append(target)
        return real(method, target, *args)

    monkeypatch.setattr(chain, "build_request", counting)
    return built


def test_defaults() -> None:
    spec = HttpSpec.model_validate({"url": "https://example.com/"})
    assert spec.method == "GET"
    assert spec.expected_status == ["200-399"]
    assert (spec.follow_redirects, spec.max_redirects, spec.verify_tls) == (False, 5, True)
    assert spec.max_body_bytes == 64 * 1024
    assert spec.degraded_ms is None


def test_stored_spec_reads_back_the_same() -> None:
    """The store keeps model_dump(mode="json"); the executor parses that again."""
    spec = HttpSpec.model_validate({
        "url": "https://example.com/x?y=1", "method": "POST", "body": "{}",
        "headers": {"X-Test": "1"}, "username": "u", "password": "p",
        "expected_status": [200, "3xx", "401-403"], "keyword": "ok", "regex": r"v\d",
        "json_path": "$.status", "json_one_of": ["ok", None], "header_regex": {"x-v": "^1"},
        "degraded_ms": 500, "follow_redirects": True})
    again = HttpSpec.model_validate(spec.model_dump(mode="json"))
    assert again == spec
    assert http.KIND.prepare(again).first.request == http.KIND.prepare(spec).first.request


@pytest.mark.parametrize(("item", "expected"), [
    (200, (200, 200)), ("204", (204, 204)), ("200-299", (200, 299)), (" 301 - 308 ", (301, 308)),
    ("2xx", (200, 299)), ("5XX", (500, 599)),
])
def test_status_items(item: int | str, expected: tuple[int, int]) -> None:
    assert status_range(item) == expected


@pytest.mark.parametrize(("spec", "field", "message"), [
    ({"expected_status": [99]}, "expected_status.0", "100-599"),
    ({"expected_status": ["ok"]}, "expected_status.0", "a class (2xx)"),
    ({"expected_status": ["299-200"]}, "expected_status.0", "low-high"),
    ({"expected_status": [200, "6xx"]}, "expected_status.1", "a class (2xx)"),
    ({"expected_status": []}, "expected_status", "at least 1"),
    ({"url": "https://user:pw@example.com/"}, "url", "username/password"),
    ({"url": "ftp://example.com/"}, "url", "URL scheme"),
    ({"method": "TRACE"}, "method", "'GET'"),
    ({"headers": {"Bad Name": "x"}}, "headers.Bad Name.[key]", "not a valid header name"),
    ({"headers": {"X-A": "1\r\nX-Injected: 1"}}, "headers", "CR, LF"),
    ({"headers": {"Content-Length": "1"}}, "headers", "set by the check"),
    ({"headers": {"x-a": "1", "X-A": "2"}}, "headers", "twice"),
    ({"username": "u", "bearer_token": "t"}, "", "not both"),
    ({"password": "p"}, "", "password without username"),
    ({"bearer_token": "t", "headers": {"Authorization": "x"}}, "", "Authorization header"),
    ({"regex": "(unclosed"}, "regex", "not a valid regular expression"),
    ({"header_regex": {"x-v": "[z-a]"}}, "header_regex.x-v", "not a valid regular expression"),
    ({"json_path": "$[?("}, "json_path", "not a valid JSONPath"),
    # RE2 runs every pattern in linear time: what needs backtracking is refused, with why.
    ({"regex": r"(a)\1"}, "regex", "not a valid regular expression: a backreference"),
    ({"regex": r"ok(?!ay)"}, "regex", "not a valid regular expression: a lookaround"),
    ({"header_regex": {"x-v": r"(?<=v)1"}}, "header_regex.x-v", "a lookaround"),
    ({"regex": r"end\Z"}, "regex", "RE2 writes the end of the text \\z"),
    ({"regex": r"(\pL{0,50}){2}"}, "regex", "compiled instructions, at most 1000"),
    ({"regex": "x" * 1001}, "regex", "at most 1000 characters"),
    # A JSONPath's own regex operators would run Python's backtracking re.
    ({"json_path": '$[?(@.name =~ "(a+)+$")]'}, "json_path", "regular expression in a JSONPath"),
    ({"json_path": "$.name.`sub(/(a+)+$/, x)`"}, "json_path", "regular expression in a JSONPath"),
    ({"json_equals": "ok"}, "", "need json_path"),
    ({"json_path": "$.a", "json_equals": 1, "json_one_of": [1]}, "", "not both"),
    ({"json_path": "$.a", "json_one_of": []}, "json_one_of", "at least 1"),
    ({"max_body_bytes": 2 * 1024 * 1024}, "max_body_bytes", "less than or equal"),
    ({"degraded_ms": 0}, "degraded_ms", "greater than or equal to 1"),
    ({"max_redirects": 31}, "max_redirects", "less than or equal"),
    ({"retries": 3}, "retries", "Extra inputs"),
])
def test_invalid_specs_name_the_field(spec: dict[str, Any], field: str, message: str) -> None:
    entry = {"id": "web", "kind": "http", "http": {"url": "https://example.com/", **spec}}
    with pytest.raises(SpecError) as info:
        SCHEMA.parse([entry])
    [problem] = info.value.problems
    assert f": http{'.' + field if field else ''}: " in problem, problem
    assert message in problem, problem


def test_validation_builds_no_request(requests_built: list[str]) -> None:
    """The API and `monitors apply` validate; only the executor prepares."""
    entry = {"id": "web", "kind": "http", "http": {
        "url": "https://example.com/a", "regex": "ok", "json_path": "$.status",
        "header_regex": {"x-v": "^1"}}}
    assert [monitor.id for monitor in SCHEMA.parse([entry])] == ["web"]
    spec = HttpSpec.model_validate(entry["http"])
    assert requests_built == []
    http.KIND.prepare(spec)
    assert requests_built == ["/a"]


def test_the_plan() -> None:
    plan = http.KIND.prepare(HttpSpec.model_validate({
        "url": "https://example.com/", "expected_status": [200, "3xx", "401-403"],
        "regex": r"v\d", "json_path": "$.services[*].status",
        "header_regex": {"X-Version": r"^1\."}}))
    assert plan.status == ((200, 200), (300, 399), (401, 403))
    assert plan.regex == Pattern.of(r"v\d")
    assert plan.regex.search("v1")
    assert not plan.regex.search("vx")
    assert plan.header_patterns == (("X-Version", Pattern.of(r"^1\.")),)
    assert plan.json_path is not None
    assert plan.json_path.values({"services": [{"status": "ok"}]}) == ["ok"]
    bare = http.KIND.prepare(HttpSpec.model_validate({"url": "https://example.com/"}))
    assert (bare.regex, bare.json_path, bare.header_patterns) == (None, None, ())


def test_request_bytes() -> None:
    plan = http.KIND.prepare(HttpSpec.model_validate({
        "url": "http://example.com:8080/a b?q=ü", "method": "POST", "body": "hé",
        "headers": {"User-Agent": "mine", "X-Test": "1"}, "bearer_token": "tok"}))
    head, _, body = plan.first.request.data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /a%20b?q=%C3%BC HTTP/1.1"
    assert b"Host: example.com:8080" in lines
    assert b"User-Agent: mine" in lines
    assert b"User-Agent: Vigil" not in head
    assert b"Connection: close" in lines
    assert b"Accept-Encoding: identity" in lines
    assert b"Content-Length: 3" in lines
    assert body == "hé".encode()
    assert b"Authorization: Bearer tok" in lines
    assert plan.first.request.port == 8080
    assert not plan.first.request.tls


async def test_the_executor_prepares_once_per_spec_version(requests_built: list[str]) -> None:
    checker = Checker(Context(aioredis.Redis(), Keys("0")))
    first = check_due("web", "http", {"url": "https://example.com/p"}, spec_version=1)
    try:
        kind, plan = checker.prepared(first)
        assert kind is http.KIND
        assert checker.prepared(first)[1] is plan
        assert requests_built == ["/p"]
        # A new version is prepared again.
        assert checker.prepared(replace(first, spec_version=2))[1] == plan
        assert requests_built == ["/p", "/p"]
    finally:
        await checker.close()
        await checker.ctx.redis.aclose()


@pytest.mark.parametrize(("got", "expected", "equal"), [
    (1, 1.0, True), (True, 1, False), (1, True, False), ("1", 1, False), (None, None, True),
    ([1, {"a": True}], [1.0, {"a": True}], True), ({"a": 1}, {"a": 1, "b": 2}, False),
    ([1, 2], [1], False), (False, False, True),
])
def test_json_equality(got: object, expected: object, equal: bool) -> None:
    assert json_equal(got, expected) is equal
