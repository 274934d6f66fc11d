"""Alerts to a Slack-compatible incoming webhook (ALERT_WEBHOOK_URL), at most once per incident.

An incident has a key: `dead:<handler>` (events going dead in one handler: a burst of 500 after
a bad deploy is one incident), `hook:<target>` (a hook endpoint whose deliveries give up),
`reconcile-repaired`, `reconcile-failed`, `signatures` (bad-signature refusals over the threshold).
The process that opens an incident sends its one message; later occurrences only count (`seen`).
An incident closes silently when its condition clears (see `worker.alerts.incidents`); a
recurrence after that is a new incident and a new message.

Callers use the functions below: they are synchronous, never raise, and hand the Redis work and
the POST to a background task, so an alert never slows or fails an event, a delivery or a scan.
"""

from worker.alerts.notify import (
    Alerter,
    alerter,
    attach,
    event_dead,
    hook_outcome,
    scan_watched,
    webhook_refused,
)

__all__ = ["Alerter", "alerter", "attach", "event_dead", "hook_outcome", "scan_watched", "webhook_refused"]
