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

Synchronous answers, for tooling written against kinto-signer (which signed inside the request): with
`wait_seconds`, or when the editor's request says `Prefer: wait=N`, the event is posted from the request itself
after the commit, asking the service to hold its answer until the jobs are final; the editor's response then
carries `Signer-Jobs: succeeded` (or the states the jobs were in when the wait ran out, or `unknown` when the
service could not be reached; the event is then sent in the background as usual), and `Preference-Applied` when
the request asked. A preview or destination read right after is then the signed one.

Settings (prefix `kinto.event_listeners.<name>.`):
  use = kinto_signer_webhook
  url = http://127.0.0.1:8000/v1/webhooks/kinto
  hmac_secret = <shared with the service's api.webhook_secret>   (optional)
  buckets = main-workspace security-state-staging               (source buckets; all buckets when empty)
  timeout_seconds = 2
  wait_seconds = 0                                              (> 0: a status change answers once its job
                                                                 finished, at most that long; a request's own
                                                                 `Prefer: wait=N` overrides it. See below.)
  resources = collection record                                 (Kinto's own filter)
"""

import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
import urllib.request

import transaction
from pyramid.settings import aslist

logger = logging.getLogger(__name__)

# Calls waiting for the sender thread; beyond this they are dropped (the feed is the safety net).
QUEUE_SIZE = 1000


def encode(body):
    return json.dumps(body, default=str).encode()


def signature(secret, timestamp, body):
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


# The longest the service holds an answer (its `Prefer: wait` cap).
MAX_WAIT_SECONDS = 60
# What the editor's response says of the jobs when it waited for them.
JOBS_HEADER = "Signer-Jobs"


def preferred_wait(request, default):
    """Seconds the editor's request asks to wait for its jobs (`Prefer: wait=N`, RFC 7240), else `default`."""
    for preference in request.headers.get("Prefer", "").split(","):
        name, _, value = preference.split(";")[0].partition("=")
        if name.strip().lower() == "wait":
            try:
                return min(max(int(value.strip().strip('"')), 0), MAX_WAIT_SECONDS), True
            except ValueError:
                break
    return default, False


def job_states(answer):
    """The states of the jobs in the service's webhook answer (one job, or several with what was ignored)."""
    if "data" in answer:
        return [answer["data"]["state"]]
    return [job["data"]["state"] for job in answer.get("jobs", [])]


class Listener:
    def __init__(self, url, secret, buckets, timeout, wait_seconds=0):
        self.url = url
        self.secret = secret
        self.buckets = set(buckets)
        self.timeout = timeout
        self.wait_seconds = min(wait_seconds, MAX_WAIT_SECONDS)
        # The sender thread belongs to a process: started on first use in each one, so that the workers a
        # pre-forking server (gunicorn --preload, uWSGI without lazy-apps) makes after loading Kinto get their own
        # (a thread does not survive fork).
        self._lock = threading.Lock()
        self._sender_pid = None
        self.pending = None

    def _queue(self):
        with self._lock:
            if self._sender_pid != os.getpid():
                self.pending = queue.Queue(QUEUE_SIZE)
                threading.Thread(target=self._send_forever, args=(self.pending,), name="signer-webhook",
                                 daemon=True).start()
                self._sender_pid = os.getpid()
            return self.pending

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
        # Only what committed is announced: a rolled-back request must not trigger a signature. The body is
        # written then, so that it holds what `signoff` wrote in the same transaction, whichever of the two
        # subscribers Kinto called first (a new source is announced as `to-sign`).
        wait, asked = preferred_wait(event.request, self.wait_seconds)
        if wait:
            transaction.get().addAfterCommitHook(self._deliver_now, args=(body, event.request, wait, asked))
        else:
            transaction.get().addAfterCommitHook(self._enqueue, args=(body,))

    def _deliver_now(self, committed, body, request, wait, asked):
        """The synchronous answer: the editor's response leaves once the service says the jobs are final (or the
        wait ran out), with their states in `Signer-Jobs` (`succeeded`; `queued`/`running` when the wait ran out).
        A call that fails goes to the background sender like any other."""
        if not committed:
            return
        data = encode(body)
        try:
            states = job_states(self.send(data, wait))
        except Exception as e:  # noqa: BLE001 - the change is committed: never fail the editor's request now
            logger.error("signer webhook %s failed, sending later: %s", self.url, e)
            self._enqueue(True, body)
            states = ["unknown"]
        headers = request.response.headers
        headers[JOBS_HEADER] = ", ".join(states) or "none"
        if asked:
            headers["Preference-Applied"] = f"wait={wait}"

    def _enqueue(self, committed, body):
        if not committed:
            return
        try:
            self._queue().put_nowait(encode(body))
        except queue.Full:
            logger.error("signer webhook queue full: event dropped (the change feed will find it)")

    def _send_forever(self, pending):
        while True:
            data = pending.get()
            try:
                self.send(data)
            except Exception as e:  # noqa: BLE001 - never let the sender thread die
                logger.error("signer webhook %s failed: %s", self.url, e)

    def send(self, data, wait=0):
        """Posts one event; with `wait`, asks the service to answer once its jobs are final. Returns the answer."""
        headers = {"Content-Type": "application/json"}
        if self.secret:
            timestamp = str(int(time.time()))
            headers["X-Signer-Timestamp"] = timestamp
            headers["X-Signer-Signature"] = signature(self.secret, timestamp, data)
        if wait:
            headers["Prefer"] = f"wait={wait}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout + wait) as response:
            return json.loads(response.read() or b"{}")


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
        wait_seconds=int(settings.get(prefix + "wait_seconds", 0)),
    )
