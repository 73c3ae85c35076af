"""What the kinds that verify a server certificate share (tls, and http over https): the trust
store of a `ca_file`, the error kind of a rejected certificate, and its expiry told in words
with the warning a monitor sets (`warn_days`, `cert_warn_days`)."""

from __future__ import annotations

import os
import ssl
from datetime import UTC, datetime

from engine.cache import MISS, BoundedCache

CA_CACHE_MAX = 64
DAY_S = 86_400

# OpenSSL X509_V_ERR_* codes (x509_vfy.h) that a handshake can fail with.
CERT_HAS_EXPIRED = 10
HOSTNAME_CODES = frozenset({62, 64})  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH
UNTRUSTED_CODES = frozenset({
    2,   # UNABLE_TO_GET_ISSUER_CERT
    18,  # DEPTH_ZERO_SELF_SIGNED_CERT
    19,  # SELF_SIGNED_CERT_IN_CHAIN
    20,  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21,  # UNABLE_TO_VERIFY_LEAF_SIGNATURE
    27,  # CERT_UNTRUSTED
    28,  # CERT_REJECTED
})

# (path, mtime, size) -> a context trusting that file as it is now.
_trust: BoundedCache[tuple[str, int, int], ssl.SSLContext] = BoundedCache(CA_CACHE_MAX)


def trust(ca_file: str) -> ssl.SSLContext:
    """A verifying context that trusts only `ca_file`; reloaded when the file changes.
    Raises OSError or ssl.SSLError for a file that is missing or holds no certificate."""
    st = os.stat(ca_file)
    key = (ca_file, st.st_mtime_ns, st.st_size)
    context = _trust.get(key)
    if context is MISS:
        context = ssl.create_default_context(cafile=ca_file)
        _trust.put(key, context)
    return context


def verify_kind(exc: ssl.SSLCertVerificationError) -> str:
    """The error kind of a certificate the handshake rejected, from OpenSSL's verify code."""
    code = exc.verify_code
    return ("tls_expired" if code == CERT_HAS_EXPIRED else
            "tls_hostname" if code in HOSTNAME_CODES else
            "tls_untrusted" if code in UNTRUSTED_CODES else "tls")


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    for unit, size in (("day", DAY_S), ("hour", 3_600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return "less than a minute"


def expiry(not_after: datetime) -> tuple[int, float, str]:
    """notAfter in epoch ms, seconds left (negative when past), and words for a message."""
    left = (not_after - datetime.now(UTC)).total_seconds()
    when = not_after.strftime("%Y-%m-%d %H:%M UTC")
    words = f"expires in {_span(left)}, on {when}" if left > 0 else \
        f"expired {_span(left)} ago, on {when}"
    return int(not_after.timestamp() * 1000), left, words


def expiring(name: str, not_after: datetime, warn_days: int, setting: str) -> str | None:
    """The `tls_expiring` message when fewer than `warn_days` are left on the certificate of
    `name`, else None; `setting` names the monitor's option in the message."""
    _, left, words = expiry(not_after)
    if left >= warn_days * DAY_S:
        return None
    return f"certificate for {name} {words} ({setting} is {warn_days})"
