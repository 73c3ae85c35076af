"""What each event means for the channels: which alert it opens or ends (pure, no I/O), the
payload every channel is sent, and its text for apprise.

An incident.opened inside a muted maintenance window or folded into a dependency's incident
is not sent, so neither is its resolve: a resolve goes to the channels the open alert went to
(engine.channels.open_alerts), whatever maintenance, routing changes or restarts came since.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from engine.events import (
    INCIDENT_OPENED,
    INCIDENT_RESOLVED,
    MONITOR_CHANGED,
    MONITORING_DEGRADED,
    MONITORING_RESTORED,
    Event,
)


@dataclass(frozen=True, slots=True)
class Step:
    """One message an event gives: `opens` an alert (sent to the channels routed `route`) or
    ends one (sent to the channels that got it; an incident's end only to those routed `up`).
    `subject` tells one incident from the next; the other alerts have one at a time."""

    message: str
    route: str
    alert: str
    subject: str
    opens: bool


def steps(event: Event) -> list[Step]:
    """The messages of one event, ends before opens (degraded -> flapping ends one, opens
    the other)."""
    if event.type == INCIDENT_OPENED and event.incident_id:
        if event.maintenance or event.folded_into:
            return []
        return [Step("down", "down", "incident", event.incident_id, True)]
    if event.type == INCIDENT_RESOLVED and event.incident_id:
        return [Step("up", "up", "incident", event.incident_id, False)]
    if event.type == MONITORING_DEGRADED:
        if event.maintenance:
            return []
        return [Step("monitoring.degraded", "monitoring", "monitoring", "", True)]
    if event.type == MONITORING_RESTORED:
        return [Step("monitoring.restored", "monitoring", "monitoring", "", False)]
    if event.type != MONITOR_CHANGED or event.status == event.previous:
        return []
    out = [Step(f"{state}.resolved", state, state, "", False)
           for state in ("degraded", "flapping") if event.previous == state]
    if event.status in ("degraded", "flapping") and not event.maintenance:
        out.append(Step(event.status, event.status, event.status, "", True))
    return out


def payload(event: Event, message: str) -> dict[str, Any]:
    """What a channel is sent about an event: the message and the event's own fields."""
    data = {k: v for k, v in asdict(event).items() if v not in (None, {}, False)}
    return {"message": message, "event": data}


def reminder(opened: dict[str, Any], number: int) -> dict[str, Any]:
    return {"message": "reminder", "reminder": number, "event": opened["event"]}


WORDS = {"down": "DOWN", "up": "RESOLVED", "degraded": "DEGRADED",
         "degraded.resolved": "no longer degraded", "flapping": "FLAPPING",
         "flapping.resolved": "no longer flapping",
         "monitoring.degraded": "monitoring degraded (too few regions report)",
         "monitoring.restored": "monitoring restored", "reminder": "STILL DOWN"}


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def text(body: dict[str, Any]) -> tuple[str, str, str]:
    """(title, body, apprise notify type) of a payload."""
    message = body["message"]
    if message == "test":
        return "Vigil test", f"A test message to channel {body['channel_id']}.", "info"
    if message == "summary":
        lines = [f"- {i['monitor_id'] or '-'}: {WORDS.get(i['message'], i['message'])}"
                 for i in body["items"]]
        return (f"Vigil: {body['count']} alerts at once", "\n".join(lines), "warning")
    event = body["event"]
    word = WORDS.get(message, message)
    title = f"{event['monitor_id']} {word}"
    lines = [f"at {_when(event['at_ms'])}"]
    if event.get("incident_id"):
        lines.append(f"incident {event['incident_id']}")
    if body.get("reminder"):
        lines.append(f"reminder {body['reminder']}")
    if event.get("regions"):
        lines.append("regions: " + ", ".join(f"{r} {s}" for r, s in event["regions"].items()))
    if event.get("error_kind") or event.get("error"):
        lines.append(f"error: {event.get('error_kind') or ''} {event.get('error') or ''}".strip())
    kind = "success" if message.endswith(("resolved", "restored")) or message == "up" else (
        "failure" if message in ("down", "reminder") else "warning")
    return title, "\n".join(lines), kind
