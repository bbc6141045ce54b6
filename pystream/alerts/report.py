"""The triggers in `pystream status` (text) and /metrics (Prometheus families), read from the
`alerts` part of the daemon's status (AlertEngine.status())."""

from __future__ import annotations

from typing import List


def status_lines(status: dict, fmt_time) -> List[str]:
    """Lines for `pystream status`: one per trigger, then one per action target."""
    a = status.get("alerts")
    if not a:
        return []
    lines = []
    trig = a.get("triggers") or {}
    head = ["trigger", "fired", "last_fired", "last_score", "failures", "pending", "expired"]
    rows = [[name, str(t.get("fired", 0)), fmt_time(t.get("last_fired")),
             "-" if t.get("last_score") is None else f"{t['last_score']:.3f}",
             str(t.get("delivery_failures", 0)), str(t.get("pending", 0)),
             str(t.get("expired", 0))] for name, t in sorted(trig.items())]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    extra = "" if not a.get("error") else f"; EVALUATOR STOPPED: {a['error']}"
    lines.append(f"alerts: {a.get('rows_evaluated', 0)} rows evaluated, "
                 f"{a.get('queued_batches', 0)} batches queued{extra}")
    lines.append("  ".join(h.upper().ljust(w) for h, w in zip(head, widths)))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    for tid, h in sorted((a.get("targets") or {}).items()):
        state = h.get("state", "unknown")
        more = ""
        if state == "down":
            more = f" ({h.get('last_error')}; retry in {h.get('retry_in_s')} s)"
        lines.append(f"target {tid}: {state}{more}")
    return lines


def metric_families(status: dict):
    """Prometheus metric families of the alerts (nothing when no trigger is configured)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    a = (status or {}).get("alerts")
    if not a:
        return []
    fired = CounterMetricFamily("pystream_alerts_fired", "Alerts fired (one per event)",
                                labels=["trigger"])
    last = GaugeMetricFamily("pystream_alert_last_fired_timestamp_seconds",
                             "When the trigger last fired (epoch seconds)", labels=["trigger"])
    fails = CounterMetricFamily("pystream_alert_delivery_failures",
                                "Failed delivery attempts (each retry counts)", labels=["trigger"])
    pending = GaugeMetricFamily("pystream_alert_deliveries_pending",
                                "Deliveries not yet acknowledged by their target",
                                labels=["trigger"])
    for name, t in (a.get("triggers") or {}).items():
        fired.add_metric([name], float(t.get("fired", 0)))
        if t.get("last_fired") is not None:
            last.add_metric([name], float(t["last_fired"]))
        fails.add_metric([name], float(t.get("delivery_failures", 0)))
        pending.add_metric([name], float(t.get("pending", 0)))
    up = GaugeMetricFamily("pystream_alert_target_up",
                           "1 when the action target took the last alert (or the start-up probe)",
                           labels=["target", "kind"])
    for tid, h in (a.get("targets") or {}).items():
        up.add_metric([tid, h.get("kind", "")], 1.0 if h.get("state") == "up" else 0.0)
    return [fired, last, fails, pending, up]
