"""Action targets (webhook, MQTT) and their delivery threads.

One thread per distinct target (two triggers posting to the same URL share it), so a receiver
that hangs delays only its own alerts. Each thread sends its target's pending deliveries from the
alert log, oldest first; a failure backs off (alerts.backoff_initial_s, doubling up to
backoff_max_s) and retries, for as long as the alert is younger than alerts.expire_s. A delivery
is marked done only after the receiver acknowledged it (webhook: a 2xx answer; MQTT: the broker's
PUBACK / PUBCOMP for qos 1 / 2), so a crash in between sends it again after the restart, with
the same idempotency key (payload `key`, webhook header `Idempotency-Key`).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Callable, Optional

from .config import MqttConfig, WebhookConfig

log = logging.getLogger("pystream.alerts")
_client_ids = itertools.count(1)


class DeliveryError(Exception):
    pass


class WebhookTarget:
    kind = "webhook"

    def __init__(self, cfg: WebhookConfig):
        self.cfg = cfg
        self.id = cfg.target_id()

    def probe(self) -> None:
        """Raise OSError if nothing accepts a connection at the URL's host and port."""
        from urllib.parse import urlsplit

        u = urlsplit(self.cfg.url)
        port = u.port or (443 if u.scheme == "https" else 80)
        with socket.create_connection((u.hostname, port), timeout=self.cfg.timeout_s):
            pass

    def send(self, key: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "Idempotency-Key": key,
                   "User-Agent": "pystream-alerts/1"}
        headers.update(self.cfg.headers)
        req = urllib.request.Request(self.cfg.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as r:
                r.read()
                if not 200 <= r.status < 300:
                    raise DeliveryError(f"HTTP {r.status}")
        except urllib.error.HTTPError as e:
            raise DeliveryError(f"HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise DeliveryError(f"{type(reason).__name__}: {reason}") from None

    def close(self) -> None:
        pass


class MqttTarget:
    """paho-mqtt client, connected on demand; publish waits for the broker's acknowledgement."""
    kind = "mqtt"

    def __init__(self, cfg: MqttConfig):
        self.cfg = cfg
        self.id = cfg.target_id()
        self._client = None

    def _connect(self):
        import paho.mqtt.client as mqtt

        cid = self.cfg.client_id or f"pystream-{os.getpid()}-{next(_client_ids)}"
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid,
                        protocol=mqtt.MQTTv311)
        if self.cfg.username is not None:
            c.username_pw_set(self.cfg.username, self.cfg.password)
        if self.cfg.tls:
            c.tls_set()
        c.connect_timeout = self.cfg.timeout_s
        connected = threading.Event()
        result = {}

        def on_connect(client, userdata, flags, reason_code, properties):
            result["rc"] = reason_code
            connected.set()

        c.on_connect = on_connect
        try:
            c.connect(self.cfg.host, self.cfg.port, keepalive=30)
        except (OSError, ValueError) as e:
            raise DeliveryError(f"cannot connect to {self.cfg.host}:{self.cfg.port}: {e}") from None
        c.loop_start()
        if not connected.wait(self.cfg.timeout_s) or result["rc"].is_failure:
            c.loop_stop()
            c.disconnect()
            raise DeliveryError(f"broker {self.cfg.host}:{self.cfg.port} refused or did not "
                                f"answer: {result.get('rc', 'timeout')}")
        return c

    def probe(self) -> None:
        if self._client is None:
            self._client = self._connect()

    def send(self, key: str, body: bytes) -> None:
        if self._client is None or not self._client.is_connected():
            self.close()
            self._client = self._connect()
        info = self._client.publish(self.cfg.topic, body, qos=self.cfg.qos, retain=self.cfg.retain)
        try:
            info.wait_for_publish(self.cfg.timeout_s)
        except (RuntimeError, ValueError) as e:
            self.close()
            raise DeliveryError(f"publish failed: {e}") from None
        if not info.is_published():
            self.close()
            raise DeliveryError(f"broker did not acknowledge within {self.cfg.timeout_s:g} s")

    def close(self) -> None:
        c, self._client = self._client, None
        if c is not None:
            try:
                c.disconnect()
                c.loop_stop()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass


def make_target(action):
    t = action.target
    return WebhookTarget(t) if isinstance(t, WebhookConfig) else MqttTarget(t)


class DeliveryWorker:
    """The thread that delivers one target's alerts. `on_result(trigger, outcome)` counts
    (outcome: "delivered", "failed" or "expired")."""

    def __init__(self, target, store, *, backoff_initial_s: float, backoff_max_s: float,
                 expire_s: float, stop: threading.Event,
                 on_result: Optional[Callable[[str, str], None]] = None):
        self.target = target
        self.store = store
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.expire_s = expire_s
        self.stop = stop
        self.on_result = on_result
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.state = "unknown"  # up | down | unknown
        self.last_error: Optional[str] = None
        self.last_ok: Optional[float] = None
        self.consecutive_failures = 0
        self.next_try: float = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"pystream-alerts-{target.kind}")

    def start(self) -> "DeliveryWorker":
        self.thread.start()
        return self

    def notify(self) -> None:
        self.wake.set()

    def join(self, timeout: float) -> None:
        self.wake.set()
        self.thread.join(timeout)
        self.target.close()

    def health(self) -> dict:
        with self.lock:
            return dict(kind=self.target.kind, state=self.state, last_error=self.last_error,
                        last_ok=self.last_ok, consecutive_failures=self.consecutive_failures,
                        retry_in_s=(round(max(0.0, self.next_try - time.monotonic()), 2)
                                    if self.state == "down" else None))

    def _backoff(self) -> float:
        n = self.consecutive_failures
        d = min(self.backoff_max_s, self.backoff_initial_s * 2 ** max(0, n - 1))
        return d * random.uniform(0.9, 1.1)

    def _mark(self, ok: bool, error: Optional[str] = None) -> None:
        with self.lock:
            if ok:
                self.state, self.last_error, self.last_ok = "up", None, time.time()
                self.consecutive_failures = 0
                self.next_try = 0.0
            else:
                self.state, self.last_error = "down", error
                self.consecutive_failures += 1
                self.next_try = time.monotonic() + self._backoff()

    def _run(self) -> None:
        try:  # an unreachable target at start is a warning; alerts wait for it
            self.target.probe()
            self._mark(True)
        except Exception as e:  # noqa: BLE001
            self._mark(False, str(e))
            log.warning("alert target %s is not reachable now (%s); alerts for it are kept "
                        "and retried", self.target.id, e)
        while not self.stop.is_set():
            wait = self.next_try - time.monotonic()
            if wait > 0:
                self.wake.wait(min(wait, 1.0))
                self.wake.clear()
                continue
            try:
                due = self.store.due(self.target.id)
            except Exception:  # noqa: BLE001 - the log closed under us at shutdown
                if self.stop.is_set():
                    return
                raise
            if not due:
                self.wake.wait(1.0)
                self.wake.clear()
                continue
            for d in due:
                if self.stop.is_set():
                    return
                if time.time() - d.fired > self.expire_s:
                    self.store.expire(d.key, self.target.id, "expired: not delivered within "
                                      f"{self.expire_s:g} s")
                    log.error("alert %s (%s) to %s expired undelivered", d.key, d.trigger,
                              self.target.id)
                    if self.on_result:
                        self.on_result(d.trigger, "expired")
                    continue
                try:
                    self.target.send(d.key, d.payload.encode())
                except Exception as e:  # noqa: BLE001 - any failure: retry later
                    err = str(e) or type(e).__name__
                    self.store.failed(d.key, self.target.id, err)
                    self._mark(False, err)
                    if self.on_result:
                        self.on_result(d.trigger, "failed")
                    log.warning("alert %s (%s) to %s failed (attempt %d): %s; retry in %.1f s",
                                d.key, d.trigger, self.target.id, d.attempts + 1, err,
                                max(0.0, self.next_try - time.monotonic()))
                    break
                self.store.delivered(d.key, self.target.id)
                self._mark(True)
                if self.on_result:
                    self.on_result(d.trigger, "delivered")
