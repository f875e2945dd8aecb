"""Alerts: what needs someone's attention, raised where it happens and pushed to people.

- `raised.py`: the alerts table as the API lists and acknowledges it. Any part may insert an
  alert of a kind of its own (`kind` a snake_case word, `subject` its deduplication key):
  it is listed and delivered like the others.
- `rules.py`: the rules an admin configures (excursion, qc_failed, device_offline,
  outbox_alarm, gap_found) with their parameters. Data-driven rules are evaluated by
  triggers in the transaction that stores the data (migration 0030: a reading out of its
  tag's spec limits in a running batch, a failed QC result); time-based ones by
  `evaluator.py`, a task of the collector. `held_lot_at_door` needs no rule: it is raised
  whenever an edge flags a held lot at a door (migration 0027).
- `targets.py`: where alerts go (webhooks, e-mail) and which kinds and lines each gets.
- `delivery.py`: the durable queue (`alert_deliveries`, filled by a trigger in the alert's
  own transaction) and the collector task that sends it: signed webhooks, e-mail over SMTP,
  retries with exponential backoff, dead letters after the target's max attempts.
"""
