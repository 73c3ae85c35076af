"""What an HTTP check runs from: a valid spec prepared once per spec version on the executor
(`Kind.prepare`), never when the API or `monitors apply` only validate a definition."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from executors.kinds.http.chain import Hop
from executors.kinds.http.spec import HttpSpec, status_range
from executors.patterns import JsonPath, Pattern


@dataclass(frozen=True, slots=True)
class Plan:
    """The first request's bytes, status ranges and compiled patterns of one spec."""

    spec: HttpSpec = field(compare=False, repr=False)  # equal specs have equal plans
    first: Hop
    status: tuple[tuple[int, int], ...]
    regex: Pattern | None
    json_path: JsonPath | None
    header_patterns: tuple[tuple[str, Pattern], ...]

    @classmethod
    def of(cls, spec: HttpSpec) -> Plan:
        return cls(
            spec=spec,
            first=Hop.of(spec.url, spec.method, _headers_with_auth(spec),
                         None if spec.body is None else spec.body.encode()),
            status=tuple(status_range(item) for item in spec.expected_status),
            regex=Pattern.of(spec.regex) if spec.regex else None,
            json_path=JsonPath.of(spec.json_path) if spec.json_path else None,
            header_patterns=tuple((name, Pattern.of(pattern))
                                  for name, pattern in spec.header_regex.items()))


def _headers_with_auth(spec: HttpSpec) -> tuple[tuple[str, str], ...]:
    headers = list(spec.headers.items())
    if spec.username:
        token = base64.b64encode(f"{spec.username}:{spec.password or ''}".encode()).decode()
        headers.append(("Authorization", f"Basic {token}"))
    elif spec.bearer_token:
        headers.append(("Authorization", f"Bearer {spec.bearer_token}"))
    return tuple(headers)
