"""With VIGIL_LOG_FORMAT=json every line is JSON, a library's own log records included."""

from __future__ import annotations

import json
import subprocess
import sys

PROGRAM = """
import logging
import structlog
from engine import logging as vlogging

vlogging.configure("json")
structlog.get_logger(component="test").warning("ours", n=1)
logging.getLogger("asyncpg.pool").warning("a library's warning: %s", "pool closed")
try:
    raise ConnectionResetError("peer went away")
except ConnectionResetError:
    logging.getLogger("aiohttp.server").exception("Error handling request")
logging.getLogger("aiohttp.access").info("routine chatter is left out")
"""


def test_every_line_is_json_a_librarys_too():
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                          timeout=60, check=True)
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(line["event"], line["level"]) for line in lines] == [
        ("ours", "warning"), ("a library's warning: pool closed", "warning"),
        ("Error handling request", "error")]
    assert lines[1]["logger"] == "asyncpg.pool"
    assert "ConnectionResetError: peer went away" in lines[2]["exception"]
