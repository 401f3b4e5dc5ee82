"""Kinto listener that tells the signing service when a collection changes (the endpoints the service writes and
lists through are in `push`, enabled with `kinto.includes = kinto_signer_webhook.push`).

Kinto loads it through `kinto.event_listeners` (see kinto.ini). For every collection event of the configured
buckets it posts Kinto's event payload (with the impacted objects) to the service's webhook **after the
transaction commits**, from a background thread with a short timeout: a slow or absent signer never holds a Kinto
request. Calls are signed with HMAC-SHA256 (`X-Signer-Timestamp`, `X-Signer-Signature: sha256=<hex>` over
`<timestamp>.<body>`) when a secret is set. A call that fails is logged and dropped: the service's change feed
finds the collection anyway.

The review workflow's rules (who may change a status, edit tracking, floats, protected collections) are decided
in Kinto's transaction by `signoff` (`kinto.includes = kinto_signer_webhook.signoff`): a change this listener
announces has been accepted.

Settings (prefix `kinto.event_listeners.<name>.`):
  use = kinto_signer_webhook
  url = http://127.0.0.1:8000/v1/webhooks/kinto
  hmac_secret = <shared with the service's api.webhook_secret>   (optional)
  buckets = main-workspace security-state-staging               (source buckets; all buckets when empty)
  timeout_seconds = 2
  resources = collection record                                 (Kinto's own filter)
"""

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import urllib.request

import transaction
from pyramid.settings import aslist

logger = logging.getLogger(__name__)

# Calls waiting for the sender thread; beyond this they are dropped (the feed is the safety net).
QUEUE_SIZE = 1000


def signature(secret, timestamp, body):
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class Listener:
    def __init__(self, url, secret, buckets, timeout):
        self.url = url
        self.secret = secret
        self.buckets = set(buckets)
        self.timeout = timeout
        self.pending = queue.Queue(QUEUE_SIZE)
        threading.Thread(target=self._send_forever, name="signer-webhook", daemon=True).start()

    def __call__(self, event):
        payload = event.payload
        if self.buckets and payload.get("bucket_id") not in self.buckets:
            return
        if payload.get("resource_name") != "collection":
            return
        body = dict(payload)
        body["impacted_objects"] = [
            {k: v for k, v in impacted.items() if k in ("new", "old")} for impacted in event.impacted_objects
        ]
        data = json.dumps(body, default=str).encode()
        # Only what committed is announced: a rolled-back request must not trigger a signature.
        transaction.get().addAfterCommitHook(self._enqueue, args=(data,))

    def _enqueue(self, committed, data):
        if not committed:
            return
        try:
            self.pending.put_nowait(data)
        except queue.Full:
            logger.error("signer webhook queue full: event dropped (the change feed will find it)")

    def _send_forever(self):
        while True:
            data = self.pending.get()
            try:
                self.send(data)
            except Exception as e:  # noqa: BLE001 - never let the sender thread die
                logger.error("signer webhook %s failed: %s", self.url, e)

    def send(self, data):
        headers = {"Content-Type": "application/json"}
        if self.secret:
            timestamp = str(int(time.time()))
            headers["X-Signer-Timestamp"] = timestamp
            headers["X-Signer-Signature"] = signature(self.secret, timestamp, data)
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            response.read()


def load_from_config(config, prefix):
    settings = config.get_settings()
    url = settings.get(prefix + "url")
    if not url:
        raise ValueError(f"{prefix}url is required (the signing service's /v1/webhooks/kinto)")
    return Listener(
        url=url,
        secret=settings.get(prefix + "hmac_secret") or "",
        buckets=aslist(settings.get(prefix + "buckets", "")),
        timeout=float(settings.get(prefix + "timeout_seconds", 2)),
    )
