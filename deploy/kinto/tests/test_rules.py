"""The signoff rules alone, as pure functions: every row of kinto-remote-settings' table, in its order."""

import pytest
from pyramid.exceptions import ConfigurationError

from kinto_signer_webhook import rules
from kinto_signer_webhook.signoff import parse_resources, setting_prefixes

EDITOR = rules.Caller(userid="account:alice", is_editor=True, is_reviewer=True)
REVIEWER = rules.Caller(userid="account:bob", is_editor=False, is_reviewer=True)
OUTSIDER = rules.Caller(userid="account:eve", is_editor=False, is_reviewer=False)


def decide(old, new, caller, review=True):
    return rules.status_change(
        {"status": old, "last_review_request_by": "account:alice"} if old else {},
        {"status": new} if new else {},
        caller,
        review,
        "cfr-editors",
        "cfr-reviewers",
    )


@pytest.mark.parametrize(
    "old, new, caller, review, answer",
    [
        ("work-in-progress", None, EDITOR, True, (400, "Cannot remove status")),
        ("signed", "work-in-progress", OUTSIDER, True, None),
        ("work-in-progress", "to-review", OUTSIDER, True, (403, "Not in cfr-editors group")),
        ("work-in-progress", "to-review", OUTSIDER, False, None),
        ("signed", "to-sign", REVIEWER, True, (400, "Collection already signed")),
        ("to-review", "to-sign", OUTSIDER, True, (403, "Not in cfr-reviewers group")),
        ("work-in-progress", "to-sign", REVIEWER, True, (400, "Collection not under review")),
        ("to-review", "to-sign", EDITOR, True, (403, "Last editor cannot review")),
        ("to-review", "to-sign", REVIEWER, True, None),
        ("work-in-progress", "to-sign", OUTSIDER, False, None),
        ("to-review", "signed", EDITOR, True, (400, "Cannot set status to 'signed'")),
        ("signed", "to-resign", OUTSIDER, True, None),
        ("signed", "to-rollback", EDITOR, True, (400, "Collection has no work-in-progress")),
        ("work-in-progress", "to-rollback", EDITOR, True, None),
        ("work-in-progress", "published", EDITOR, True, (400, "Invalid status 'published'")),
        ("to-review", "to-review", OUTSIDER, True, None),
    ],
)
def test_status_changes(old, new, caller, review, answer):
    refusal = decide(old, new, caller, review)
    assert (refusal and (refusal.status, refusal.message)) == answer


def test_a_new_collection_without_status_asks_nothing():
    assert rules.status_change({}, {"id": "cfr"}, OUTSIDER, True, "e", "r") is None


def test_tracking_fields_cannot_change_by_hand():
    old = {"last_review_request_by": "account:alice"}
    refusal = rules.tracking_change(old, {"last_review_request_by": "account:bob"})
    assert (refusal.status, refusal.message) == (
        400,
        "Cannot change <TRACKING_FIELDS.LAST_REVIEW_REQUEST_BY: 'last_review_request_by'>",
    )
    assert rules.tracking_change(old, dict(old, status="to-sign")) is None
    removed = rules.tracking_change({"last_edit_by": "x"}, {})
    assert "LAST_EDIT_BY" in removed.message


def test_floats_are_named_by_their_path():
    assert rules.float_path({"a": 1, "b": {"c": [1, "x", 2.0]}}) == "b.c.2"
    assert rules.float_path({"a": 1, "b": True, "c": None, "d": "1.5"}) is None
    refusal = rules.float_refusal({"ratio": 0.5})
    assert refusal.message == "field contains float value (tip: use integer or string), 'ratio'"


def test_a_review_request_records_who_asked_and_resets_the_comment_unless_given():
    fields = rules.tracking_after("work-in-progress", "to-review", "account:alice", "T", {})
    assert fields == {
        "last_review_request_by": "account:alice",
        "last_review_request_date": "T",
        "last_editor_comment": "",
    }
    commented = rules.tracking_after("signed", "to-review", "account:alice", "T", {"last_editor_comment": "hi"})
    assert "last_editor_comment" not in commented
    assert rules.tracking_after("to-review", "to-sign", "account:bob", "T", {}) == {}
    assert rules.tracking_after("to-review", "to-review", "account:bob", "T", {}) == {}


def test_resources_as_kinto_signer_writes_them():
    resources = parse_resources(
        "/buckets/ws -> /buckets/ws-preview -> /buckets/main\n"
        "  /buckets/sec/collections/onecrl;/buckets/blocklists/collections/certificates  \n"
    )
    assert resources["/buckets/ws"]["preview"] == {"bucket": "ws-preview", "collection": None}
    assert resources["/buckets/sec/collections/onecrl"]["destination"] == {
        "bucket": "blocklists",
        "collection": "certificates",
    }
    assert "preview" not in resources["/buckets/sec/collections/onecrl"]
    for wrong in ("/buckets/a", "/buckets/a -> /buckets/b/collections/c", "/buckets/a -> /records/x"):
        with pytest.raises(ConfigurationError):
            parse_resources(wrong)
    assert setting_prefixes("ws", "cfr") == ["ws.cfr.", "ws."]
    assert setting_prefixes("ws", None) == ["ws."]


@pytest.mark.parametrize(
    "old, new, event",
    [
        ("work-in-progress", "to-review", "ReviewRequested"),
        (None, "to-review", "ReviewRequested"),
        ("to-review", "to-sign", "ReviewApproved"),
        ("work-in-progress", "to-sign", "ReviewApproved"),
        ("to-review", "work-in-progress", "ReviewRejected"),
        ("signed", "work-in-progress", None),
        ("to-review", "to-rollback", "ReviewCanceled"),
        ("signed", "to-resign", None),
        ("to-review", "to-review", None),
        ("signed", "signed", None),
    ],
)
def test_review_events_announce_accepted_changes(old, new, event):
    assert rules.review_event(old, new) == event
