"""Standing queries: an alert the moment a committed window matches a trigger's text or image.

- config.py: the `triggers:` and `alerts:` keys (pydantic);
- events.py: what one event is (cooldown), idempotency keys, trigger embeddings;
- engine.py: the evaluator thread fed by the writer's commit hook (Indexer._on_commit);
- actions.py: webhook and MQTT targets, one delivery thread each, retries with backoff;
- store.py: the alert log (SQLite in state_dir): exactly once per (trigger, source, event);
- calibrate.py: `pystream triggers test NAME --since 24h` over the archive;
- report.py: the triggers in `pystream status` and /metrics.
"""
