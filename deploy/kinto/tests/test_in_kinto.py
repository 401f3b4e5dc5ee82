"""The plugin inside a real Kinto (its WSGI app, driven by WebTest), on the memory backend and on PostgreSQL, as in
production: the review workflow's answers, what a refused request leaves behind, and what the listener announces.

The end-to-end tests (tests/tests/e2e) run the same plugin in a Kinto server beside the signing service; these
check the plugin alone, in the request, where a failure points at the plugin.
"""

import base64
import json
import os
import queue
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlsplit, urlunsplit

import kinto
import psycopg2
import pytest
import webtest
from kinto.core.utils import hmac_digest

# The service's own account: it may write statuses and tracking fields that editors and reviewers may not.
SERVICE = ("signer", "s3cret")
EDITOR = ("alice", "a-password")
REVIEWER = ("bob", "b-password")
ADMIN_URL = os.environ.get("SIGNER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
USERID_HMAC_SECRET = "plugin-tests"


def auth(user):
    token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Webhook:
    """The signing service's webhook, as far as the listener can tell: it takes each call and answers 202."""

    def __init__(self):
        self.calls = queue.Queue()
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                calls.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"jobs": [], "ignored": []}')

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1/webhooks/kinto"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def statuses(self, until):
        """The collection statuses announced, in order, up to and including `until` (the sender is one thread:
        a call made before `until`'s has arrived by then)."""
        seen = []
        while True:
            call = self.calls.get(timeout=10)
            for impacted in call.get("impacted_objects", []):
                status = (impacted.get("new") or {}).get("status")
                if call.get("resource_name") == "collection" and status:
                    seen.append(status)
            if seen and seen[-1] == until:
                return seen


@pytest.fixture(params=["memory", "postgresql"])
def backend(request):
    if request.param == "memory":
        yield {
            "storage_backend": "kinto.core.storage.memory",
            "permission_backend": "kinto.core.permission.memory",
        }
        return
    name = f"plugin_{uuid.uuid4().hex}"
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    parts = urlsplit(ADMIN_URL)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))
    yield {
        "storage_backend": "kinto.core.storage.postgresql",
        "storage_url": url,
        "permission_backend": "kinto.core.permission.postgresql",
        "permission_url": url,
    }
    admin.cursor().execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()


def kinto_app(backend, **settings):
    base = {
        "userid_hmac_secret": USERID_HMAC_SECRET,
        "multiauth.policies": "basicauth",
        "bucket_create_principals": "system.Authenticated",
        "cache_backend": "kinto.core.cache.memory",
        **backend,
    }
    if backend["storage_backend"].endswith("postgresql"):
        # `kinto migrate`, before the plugin's start-up check reads the tables.
        bare = kinto.main({}, **base)
        bare.registry.storage.initialize_schema()
        bare.registry.permission.initialize_schema()
    return webtest.TestApp(kinto.main({}, **base, **settings))


def userid(app, user):
    return app.get("/v1/", headers=auth(user)).json["user"]["id"]


@pytest.fixture
def workflow(backend):
    """Kinto with the signoff rules (review enabled) and the listener, a source `ws/cfr` made by the editor, and
    the reviewer in its reviewers group."""
    webhook = Webhook()
    # The principal Kinto's Basic auth gives the service, known before the app starts (its settings name it).
    service = "basicauth:" + hmac_digest(USERID_HMAC_SECRET, f"{SERVICE[0]}:{SERVICE[1]}")
    app = kinto_app(
        backend,
        includes="kinto_signer_webhook.push kinto_signer_webhook.signoff",
        **{
            "signer.resources": "/buckets/ws -> /buckets/preview -> /buckets/prod",
            "signer.to_review_enabled": "true",
            "signer.service_userid": service,
            "event_listeners": "signer",
            "event_listeners.signer.use": "kinto_signer_webhook",
            "event_listeners.signer.url": webhook.url,
            "event_listeners.signer.resources": "collection record",
        },
    )
    app.put_json("/v1/buckets/ws", {}, headers=auth(EDITOR))
    app.put_json("/v1/buckets/ws/collections/cfr", {}, headers=auth(EDITOR))
    # A new source asks for its first signature at once (as kinto-signer signs it in the creating request).
    assert webhook.statuses(until="to-sign") == ["to-sign"]
    app.patch_json("/v1/buckets/ws/groups/cfr-reviewers",
                   {"data": {"members": [userid(app, REVIEWER)]}}, headers=auth(EDITOR))
    app.post_json("/v1/buckets/ws/collections/cfr/records", {"data": {"title": "one"}}, headers=auth(EDITOR))
    yield app, webhook
    webhook.server.shutdown()


def status(app):
    return app.get("/v1/buckets/ws/collections/cfr", headers=auth(EDITOR)).json["data"]["status"]


def test_the_signer_capability_lists_the_resources(workflow):
    app, _ = workflow
    capability = app.get("/v1/").json["capabilities"]["signer"]
    assert capability["to_review_enabled"] is True
    [resource] = capability["resources"]
    assert resource["source"] == {"bucket": "ws", "collection": None}
    assert resource["destination"] == {"bucket": "prod", "collection": None}


def test_a_new_source_gets_its_groups_and_targets(workflow):
    app, _ = workflow
    editors = app.get("/v1/buckets/ws/groups/cfr-editors", headers=auth(EDITOR)).json["data"]["members"]
    assert editors == [userid(app, EDITOR)]
    # Preview and destination exist at once, readable by anyone.
    for bucket in ("preview", "prod"):
        assert app.get(f"/v1/buckets/{bucket}/collections/cfr/records").json["data"] == []


def test_an_edit_puts_the_source_back_to_work_in_progress(workflow):
    app, _ = workflow
    assert status(app) == "work-in-progress"


def test_the_requester_cannot_approve_and_the_refusal_leaves_nothing(workflow):
    app, webhook = workflow
    app.patch_json("/v1/buckets/ws/collections/cfr", {"data": {"status": "to-review"}}, headers=auth(EDITOR))
    refused = app.patch_json("/v1/buckets/ws/collections/cfr", {"data": {"status": "to-sign"}},
                             headers=auth(EDITOR), status=403)
    assert refused.json["message"] == "Not in cfr-reviewers group"
    assert status(app) == "to-review"
    # The reviewer's approval is the next status announced: the refused one never was.
    app.patch_json("/v1/buckets/ws/collections/cfr", {"data": {"status": "to-sign"}}, headers=auth(REVIEWER))
    assert webhook.statuses(until="to-sign") == ["to-review", "to-sign"]
    data = app.get("/v1/buckets/ws/collections/cfr", headers=auth(EDITOR)).json["data"]
    assert data["last_review_request_by"] == userid(app, EDITOR)


def test_a_reviewer_who_asked_for_the_review_cannot_approve_it(workflow):
    app, _ = workflow
    app.patch_json("/v1/buckets/ws/collections/cfr", {"data": {"status": "to-review"}}, headers=auth(REVIEWER),
                   status=403)
    # Editors who are also reviewers: the four-eyes rule still holds.
    app.patch_json("/v1/buckets/ws/groups/cfr-editors",
                   {"data": {"members": [userid(app, EDITOR), userid(app, REVIEWER)]}}, headers=auth(EDITOR))
    app.patch_json("/v1/buckets/ws/collections/cfr", {"data": {"status": "to-review"}}, headers=auth(REVIEWER))
    refused = app.patch_json("/v1/buckets/ws/collections/cfr", {"data": {"status": "to-sign"}},
                             headers=auth(REVIEWER), status=403)
    assert refused.json["message"] == "Last editor cannot review"
    assert status(app) == "to-review"


def test_tracking_fields_and_floats_are_refused(workflow):
    app, _ = workflow
    refused = app.patch_json("/v1/buckets/ws/collections/cfr", {"data": {"last_review_by": "me"}},
                             headers=auth(EDITOR), status=400)
    assert "Cannot change" in refused.json["message"]
    app.post_json("/v1/buckets/ws/collections/cfr/records", {"data": {"id": "f", "price": 1.5}},
                  headers=auth(EDITOR), status=400)
    app.get("/v1/buckets/ws/collections/cfr/records/f", headers=auth(EDITOR), status=404)


def test_a_preview_or_destination_in_use_cannot_be_deleted(workflow):
    app, _ = workflow
    service_headers = auth(SERVICE)
    for bucket in ("preview", "prod"):
        refused = app.delete(f"/v1/buckets/{bucket}/collections/cfr", headers=service_headers, status=403)
        assert refused.json["message"] == "Collection is in use."
