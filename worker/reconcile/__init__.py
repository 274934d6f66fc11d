"""Reconciliation: find what webhooks missed through Dodo's API and repair it exactly once.

`service.reconcile` runs one scan (`scan.Scanner`) under a Redis lock, over a window that starts
at the last scan's high-water mark (`state`), and records it; `job` schedules it with arq cron;
`dodo-worker reconcile` (worker/cli/reconcile.py) runs it by hand. See docs/reconciliation.md.
"""
