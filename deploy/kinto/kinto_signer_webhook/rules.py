"""Remote Settings' signoff rules as pure decisions: no Kinto, no I/O, so each rule is tested alone.

`signoff` applies them inside the editor's request; the answers (status codes and messages) are
kinto-remote-settings' own, so kinto-admin, kinto-http and scripts see the same refusals.
"""

from dataclasses import dataclass

WORK_IN_PROGRESS = "work-in-progress"
TO_REVIEW = "to-review"
TO_SIGN = "to-sign"
TO_RESIGN = "to-resign"
TO_ROLLBACK = "to-rollback"
SIGNED = "signed"

# Written by the signer only (kinto-remote-settings' TRACKING_FIELDS, in its order).
TRACKING_FIELDS = (
    "last_edit_by",
    "last_edit_date",
    "last_review_request_by",
    "last_review_request_date",
    "last_review_by",
    "last_review_date",
    "last_signature_by",
    "last_signature_date",
)


@dataclass(frozen=True)
class Refusal:
    """An answer Kinto sends instead of committing: 400 (invalid posted data) or 403 (forbidden)."""

    status: int
    message: str


def invalid(message):
    return Refusal(400, message)


def forbidden(message):
    return Refusal(403, message)


@dataclass(frozen=True)
class Caller:
    """Who changes the status, as the request knows them."""

    userid: str
    is_editor: bool
    is_reviewer: bool


def status_change(old, new, caller, review_enabled, editors_group, reviewers_group):
    """Why changing the collection from `old` to `new` (its data, as dicts) is refused, or None.

    The order of the checks is kinto-remote-settings': a caller who breaks several rules hears the first.
    """
    old_status, new_status = old.get("status"), new.get("status")
    if old_status == new_status:
        return None
    if new_status is None:
        return invalid("Cannot remove status")
    if new_status == WORK_IN_PROGRESS or new_status == TO_RESIGN:
        return None
    if new_status == TO_REVIEW:
        if review_enabled and not caller.is_editor:
            return forbidden(f"Not in {editors_group} group")
        return None
    if new_status == TO_SIGN:
        if old_status == SIGNED:
            return invalid("Collection already signed")
        if review_enabled:
            if not caller.is_reviewer:
                return forbidden(f"Not in {reviewers_group} group")
            if old_status != TO_REVIEW:
                return invalid("Collection not under review")
            if old.get("last_review_request_by") == caller.userid:
                return forbidden("Last editor cannot review")
        return None
    if new_status == SIGNED:
        return invalid(f"Cannot set status to '{new_status}'")
    if new_status == TO_ROLLBACK:
        if old_status == SIGNED:
            return invalid("Collection has no work-in-progress")
        return None
    return invalid(f"Invalid status '{new_status}'")


def tracking_change(old, new):
    """A refusal when a tracking field differs between `old` and `new`, or None.

    The message is kinto-remote-settings' word for word (it formats the field's enum member).
    """
    for field in TRACKING_FIELDS:
        if old.get(field) != new.get(field):
            member = field.upper()
            return invalid(f"Cannot change <TRACKING_FIELDS.{member}: '{field}'>")
    return None


def float_path(value, path=""):
    """The dotted path of the first float in a record (`details.ratio`, `items.2`), or None.

    Canonical JSON cannot promise the same bytes for floats in every client, so they are refused at write time.
    """
    if isinstance(value, float):
        return path
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, inner in items:
        found = float_path(inner, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def float_refusal(record):
    path = float_path(record)
    if path is None:
        return None
    return invalid(f"field contains float value (tip: use integer or string), '{path}'")


def tracking_after(old_status, new_status, userid, now, body):
    """What an accepted review request writes in its own transaction: who asked and when (and an empty editor's
    comment unless the request gave one), as kinto-remote-settings does. Written here rather than by the service's
    job so that the next request is checked against it at once: a requester who approves a moment later is still
    the last editor. Every other status leaves its tracking to the job that carries it out."""
    if new_status != TO_REVIEW or old_status == TO_REVIEW:
        return {}
    fields = {"last_review_request_by": userid, "last_review_request_date": now}
    if "last_editor_comment" not in body:
        fields["last_editor_comment"] = ""
    return fields


def edit_tracking(userid, now):
    """What an edit of a source record writes on its collection: the work is in progress again (a review asked
    before the edit does not cover it), and by whom."""
    return {"status": WORK_IN_PROGRESS, "last_edit_by": userid, "last_edit_date": now}


def review_event(old_status, new_status):
    """The review event (kinto-remote-settings' names) an accepted status change announces, if any: a review
    requested, approved (any `to-sign`), rejected (back to work in progress from `to-review`), or cancelled (a
    rollback)."""
    if old_status == new_status:
        return None
    if new_status == TO_REVIEW:
        return "ReviewRequested"
    if new_status == TO_SIGN:
        return "ReviewApproved"
    if old_status == TO_REVIEW and new_status == WORK_IN_PROGRESS:
        return "ReviewRejected"
    if new_status == TO_ROLLBACK:
        return "ReviewCanceled"
    return None
