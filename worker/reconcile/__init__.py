"""Reconciliation: find what webhooks missed through Dodo's API and repair it exactly once.

- `scan.Scanner` reads the lists in a window (`sources`), finds what the inbox lacks and injects
  synthetic events; it also checks subscriptions granted here against Dodo (`drift`).
- `service` runs one scan: window and high-water mark (`state`), the Redis lease (`lock`), the
  run's record (`models`).
- `job` schedules it with arq cron as a background task of the worker (short arq jobs);
  `dodo-worker reconcile` (worker/cli/reconcile.py) runs it by hand. See docs/reconciliation.md.
"""
