"""The flows of Mozilla's signer browser tests (remote-settings `browser-tests/plugins/test_signer.py`: full
workflow, rollback, refresh, cannot skip to-review, same editor cannot review, re-review after cancel), driven with
kinto-http as Remote Settings' tooling drives a signer, against Kinto with the plugin of `deploy/kinto` and the
signing service. Written for this project from the flows' description; their code is not reused.

Usage: rs_signer_flow.py KINTO_URL PUBLIC_KEY_PEM sync|poll

`sync`: Kinto answers a status change once its job finished (the listener's `wait_seconds`), so each step reads
the result at once, as against kinto-signer. `poll`: no synchronous answers; each step waits for its job by
watching Kinto, as a script would. Prints one line per flow and `N passed, M failed`; exits 1 on a failure.
"""

import random
import string
import sys
import time
import traceback

from kinto_http import Client, KintoException

from verify_signature import check, key_lookup

SOURCE, PREVIEW, DESTINATION = "ws", "ws-preview", "main"


class Flows:
    def __init__(self, server, public_key, mode):
        self.server = server
        self.key_for = key_lookup(public_key)
        self.poll = mode == "poll"
        self.setup = Client(server_url=server, auth=("rs-setup", "pw"), bucket=SOURCE)
        self.editor = Client(server_url=server, auth=("rs-editor", "pw"), bucket=SOURCE)
        self.reviewer = Client(server_url=server, auth=("rs-reviewer", "pw"), bucket=SOURCE)
        self.ids = {who: client.server_info()["user"]["id"] for who, client in self.clients()}
        self.setup.create_bucket(id=SOURCE, permissions={"write": ["system.Authenticated"]}, if_not_exists=True)

    def clients(self):
        return (("setup", self.setup), ("editor", self.editor), ("reviewer", self.reviewer))

    def new_collection(self, reviewer_edits=False):
        """A source collection of its own per flow; the plugin makes its groups (the setup user in editors)."""
        name = "flow-" + "".join(random.choices(string.ascii_lowercase, k=8))
        self.setup.create_collection(id=name, data={"status": "work-in-progress"})
        editors = [self.ids["setup"], self.ids["editor"]] + ([self.ids["reviewer"]] if reviewer_edits else [])
        reviewers = [self.ids["reviewer"]] + ([self.ids["editor"]] if reviewer_edits else [])
        self.setup.patch_group(id=f"{name}-editors", data={"members": editors})
        self.setup.patch_group(id=f"{name}-reviewers", data={"members": reviewers})
        # As kinto-signer does with the creating request: the new source is signed as it is (empty).
        self.settle("the first signature", lambda: self.status(name) == "signed")
        for bucket in (PREVIEW, DESTINATION):
            self.verified(bucket, name, 0)
        return name

    def upload(self, name, count):
        records = [{"id": f"r{random.getrandbits(48):012x}", "value": random.randint(0, 10**6)} for _ in range(count)]
        with self.editor.batch(collection=name) as batch:
            for record in records:
                batch.create_record(data=record)
        return records

    def status(self, name):
        return self.editor.get_collection(id=name)["data"].get("status")

    def signature(self, bucket, name):
        """The collection's signature value; None before the service made the collection."""
        try:
            metadata = self.editor.get_collection(id=name, bucket=bucket)["data"]
        except KintoException as e:
            if e.response is not None and e.response.status_code in (403, 404):
                return None
            raise
        return (metadata.get("signature") or {}).get("signature")

    def settle(self, what, ready):
        """In `sync` mode the result must be there already; in `poll` mode it may take a moment."""
        deadline = time.monotonic() + (30 if self.poll else 0)
        while True:
            if ready():
                return
            if time.monotonic() >= deadline:
                raise AssertionError(f"{what}: not done" + (" in 30 s" if self.poll else " when Kinto answered"))
            time.sleep(0.1)

    def request_review(self, client, name):
        before = self.signature(PREVIEW, name)
        client.request_review("please", id=name)
        self.settle("the review's preview", lambda: self.signature(PREVIEW, name) not in (None, before))

    def approve(self, client, name):
        client.approve_changes(id=name)
        self.settle("the approval", lambda: self.status(name) == "signed")

    def verified(self, bucket, name, count):
        verdict = check(self.server, bucket, name, self.key_for)
        assert verdict["valid"], f"{bucket}/{name}: {verdict}"
        assert verdict["records"] == count, f"{bucket}/{name}: {verdict['records']} != {count} records"
        return verdict

    def test_capability(self):
        capability = self.editor.server_info()["capabilities"]["signer"]
        assert capability["group_check_enabled"]
        assert capability["to_review_enabled"]

    def test_full_workflow(self):
        name = self.new_collection()
        records = self.upload(name, 20)
        self.request_review(self.editor, name)
        preview = self.verified(PREVIEW, name, 20)
        self.approve(self.reviewer, name)
        self.verified(DESTINATION, name, 20)

        self.upload(name, 20)
        for record in random.sample(records, 5):
            self.editor.patch_record(id=record["id"], collection=name, data={"newkey": "x"})
        for record in random.sample(records, 5):
            self.editor.delete_record(id=record["id"], collection=name)
        assert self.status(name) == "work-in-progress"
        self.request_review(self.editor, name)
        self.verified(PREVIEW, name, 35)
        since = self.editor.get_records(bucket=PREVIEW, collection=name, _since=preview["timestamp"])
        assert 25 <= len(since) <= 30, f"{len(since)} changes since the first review"
        self.approve(self.reviewer, name)
        self.verified(DESTINATION, name, 35)

    def test_rollback(self):
        name = self.new_collection()
        self.upload(name, 3)
        self.request_review(self.editor, name)
        self.approve(self.reviewer, name)
        signed = self.editor.get_records(collection=name)
        self.upload(name, 1)
        assert len(self.editor.get_records(collection=name)) == len(signed) + 1
        self.editor.rollback_changes("undo", id=name)
        self.settle("the rollback", lambda: self.status(name) == "signed")
        assert len(self.editor.get_records(collection=name)) == len(signed)
        self.verified(PREVIEW, name, len(signed))

    def test_refresh(self):
        name = self.new_collection()
        self.upload(name, 5)
        self.request_review(self.editor, name)
        self.approve(self.reviewer, name)
        before = (self.signature(PREVIEW, name), self.signature(DESTINATION, name))
        self.reviewer.patch_collection(id=name, data={"status": "to-resign"})
        self.settle(
            "the re-signature",
            lambda: self.status(name) == "signed" and self.signature(DESTINATION, name) != before[1],
        )
        assert self.signature(PREVIEW, name) != before[0]
        self.verified(DESTINATION, name, 5)

    def test_cannot_skip_to_review(self):
        name = self.new_collection()
        self.upload(name, 1)
        refused(lambda: self.reviewer.approve_changes(id=name), 400)

    def test_same_editor_cannot_review(self):
        name = self.new_collection(reviewer_edits=True)
        self.upload(name, 1)
        self.request_review(self.reviewer, name)
        refused(lambda: self.reviewer.approve_changes(id=name), 403)

    def test_rereview_after_cancel(self):
        name = self.new_collection(reviewer_edits=True)
        self.upload(name, 1)
        self.request_review(self.reviewer, name)
        self.reviewer.decline_changes("not yet", id=name)
        refused(lambda: self.reviewer.approve_changes(id=name), 400)


def refused(call, status):
    try:
        call()
    except KintoException as e:
        assert e.response.status_code == status, f"{e.response.status_code} != {status}: {e}"
        return
    raise AssertionError("the change was accepted")


def main(server, public_key, mode):
    flows = Flows(server, public_key, mode)
    passed = failed = 0
    for name in sorted(n for n in dir(flows) if n.startswith("test_")):
        try:
            getattr(flows, name)()
            print(f"PASS {name}")
            passed += 1
        except Exception:  # noqa: BLE001 - every flow reports
            print(f"FAIL {name}\n{traceback.format_exc()}")
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[3] not in ("sync", "poll"):
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
