"""Text that leaves a process (results, dead letters, log lines, error bodies): secrets masked,
length bounded. One redactor and one cut, so no path forgets either."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit

# An error message in a result: enough for a stack of reasons, small enough for every row.
ERROR_MAX = 500


def clip(text: str, limit: int = ERROR_MAX) -> str:
    return text if len(text) <= limit else text[:limit]


def redact(text: str, url: str) -> str:
    """`text` with every secret of the connection URL `url` masked: the password of its
    userinfo (as written and percent-decoded) and any `password=` query parameter. Called
    with text == url it gives the URL safe to show: `redis://:***@host:6379/0`."""
    try:
        parts = urlsplit(url)
        secrets = [v for k, v in parse_qsl(parts.query) if k == "password"]
        password = parts.password
    except ValueError:
        return text.replace(url, "***")  # unparseable: hide the whole thing
    if password:
        secrets += [password, unquote(password)]
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
