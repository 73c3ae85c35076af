"""The response against the plan: status, headers, body size (body_over_cap), keywords, regex,
JSON path, in that order; the first that fails is the verdict (`down` with its error kind),
else `degraded` when a certificate expires within cert_warn_days or the check was slower than
degraded_ms, else `up`. Each assertion returns (error_kind, message) or None."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from engine.events import Observation
from executors.certs import expiring
from executors.httpclient import Response
from executors.kinds.http.plan import Plan
from executors.patterns import TooCostly

Failure = tuple[str, str] | None


def _cut(response: Response) -> str:
    return f" (first {len(response.body)} bytes read)" if response.truncated else ""


def _status_ok(plan: Plan, response: Response) -> Failure:
    if any(low <= response.status <= high for low, high in plan.status):
        return None
    expected = ", ".join(str(item) for item in plan.spec.expected_status)
    return "status", f"status {response.status}, expected {expected}"


def _header_values(response: Response, name: str) -> list[str]:
    key = name.lower().encode()
    return [v.decode("latin-1").strip() for k, v in response.headers if k.lower() == key]


def _headers_ok(plan: Plan, response: Response) -> Failure:
    for name, expected in plan.spec.header_equals.items():
        values = _header_values(response, name)
        if expected not in values:
            got = f"is {values[0]!r}" if values else "is missing"
            return "header", f"header {name} {got}, expected {expected!r}"
    for name, pattern in plan.header_patterns:
        values = _header_values(response, name)
        if not any(pattern.search(value) for value in values):
            got = f"is {values[0]!r}" if values else "is missing"
            return "header", f"header {name} {got}, expected to match {pattern.pattern!r}"
    return None


def _within_cap(plan: Plan, response: Response) -> Failure:
    if response.truncated and plan.spec.body_over_cap == "fail":
        return "body_too_large", (f"the body goes on past max_body_bytes "
                                  f"({plan.spec.max_body_bytes} bytes)")
    return None


def _keywords_ok(plan: Plan, response: Response) -> Failure:
    spec = plan.spec
    if spec.keyword is not None and spec.keyword.encode() not in response.body:
        return "keyword", f"{spec.keyword!r} not found in the body{_cut(response)}"
    if spec.keyword_absent is not None and spec.keyword_absent.encode() in response.body:
        return "keyword", f"{spec.keyword_absent!r} found in the body"
    return None


def _regex_ok(plan: Plan, response: Response) -> Failure:
    if plan.regex is None or plan.regex.search(response.body.decode(errors="replace")):
        return None
    return "regex", f"no match for {plan.regex.pattern!r} in the body{_cut(response)}"


def json_equal(got: object, expected: object) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1 and "1" is not 1."""
    if isinstance(got, bool) or isinstance(expected, bool):
        return type(got) is type(expected) and got == expected
    if isinstance(got, int | float) and isinstance(expected, int | float):
        return got == expected
    if isinstance(got, list) and isinstance(expected, list):
        return len(got) == len(expected) and all(map(json_equal, got, expected))
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(json_equal(got[k], expected[k])
                                                     for k in got)
    return type(got) is type(expected) and got == expected


def _show(value: object) -> str:
    return orjson.dumps(value).decode()[:200]


def _json_ok(plan: Plan, response: Response) -> Failure:
    spec = plan.spec
    if plan.json_path is None:
        return None
    try:
        document = orjson.loads(response.body)
    except orjson.JSONDecodeError as exc:
        return "json", f"the body is not JSON{_cut(response)}: {exc}"
    try:
        values = plan.json_path.values(document)
    except TooCostly as exc:  # bounded work: the body's size and shape are the target's
        return "json", (f"{spec.json_path} was not evaluated: {exc} on this "
                        f"body{_cut(response)}; a narrower path (fewer .. and *) needs fewer")
    except Exception as exc:  # a filter comparing mismatched types, say: the target's doing
        return "json", f"{spec.json_path} could not be evaluated: {exc!r}"
    if not values:
        return "json", f"{spec.json_path} matched nothing"
    # Every match must pass: `$.services[*].status` equal to "ok" means all of them.
    if spec.json_one_of is not None:
        allowed = spec.json_one_of
        bad = [v for v in values if not any(json_equal(v, a) for a in allowed)]
        wanted = f"one of {_show(allowed)}"
    elif spec.json_equals is not None:
        bad = [v for v in values if not json_equal(v, spec.json_equals)]
        wanted = _show(spec.json_equals)
    else:
        return None
    return ("json", f"{spec.json_path} is {_show(bad[0])}, expected {wanted}") if bad else None


ASSERTIONS = (_status_ok, _headers_ok, _within_cap, _keywords_ok, _regex_ok, _json_ok)


def verdict(plan: Plan, response: Response, latency_ms: float,
            expiry_ms: int | None) -> Observation:
    """`expiry_ms`: the earliest verified certificate expiry of the chain, if any."""
    obs = Observation(outcome="up", latency_ms=latency_ms, status_code=response.status,
                      tls_expiry_ms=expiry_ms)
    for assertion in ASSERTIONS:
        failure = assertion(plan, response)
        if failure is not None:
            obs.outcome = "down"
            obs.error_kind, obs.error = failure  # cut to its bound by CheckResult.of
            return obs
    warn_days = plan.spec.cert_warn_days
    warning = None if warn_days is None or expiry_ms is None else expiring(
        plan.first.request.host, datetime.fromtimestamp(expiry_ms / 1000, UTC), warn_days,
        "cert_warn_days")
    degraded_ms = plan.spec.degraded_ms
    if warning is not None:
        obs.outcome, obs.error_kind, obs.error = "degraded", "tls_expiring", warning
    elif degraded_ms is not None and latency_ms > degraded_ms:
        obs.outcome = "degraded"
        obs.error_kind = "latency"
        obs.error = f"{latency_ms:.0f} ms, degraded above {degraded_ms} ms"
    return obs
