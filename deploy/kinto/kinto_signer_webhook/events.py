"""Review events, notified once the editor's request commits, for kinto-emailer (and any other subscriber) to
tell people: a review requested, approved, rejected or cancelled. They carry kinto-remote-settings' class names
and module, so the emailer hooks Remote Settings already has (`"event":
"kinto_remote_settings.signer.events.ReviewRequested"`) match them unchanged.

They announce the decision taken in the request. The records it leads to are published by the signing service
right after (or, if that fails, retried), so `changes_count` and `changes_size_bytes` are not known yet: `None`.
"""

MODULE = "kinto_remote_settings.signer.events"


class ReviewEvent:
    def __init__(self, request, payload, impacted_objects, resource, comment=None):
        self.request = request
        self.payload = dict(payload, changes_count=None, changes_size_bytes=None)
        if comment is not None:
            self.payload["comment"] = comment
        self.impacted_objects = impacted_objects
        self.resource = resource
        self.comment = comment
        self.changes_count = None
        self.changes_size_bytes = None

    @property
    def impacted_records(self):
        return self.impacted_objects


def _event_class(name):
    return type(name, (ReviewEvent,), {"__module__": MODULE})


ReviewRequested = _event_class("ReviewRequested")
ReviewApproved = _event_class("ReviewApproved")
ReviewRejected = _event_class("ReviewRejected")
ReviewCanceled = _event_class("ReviewCanceled")

BY_NAME = {cls.__name__: cls for cls in (ReviewRequested, ReviewApproved, ReviewRejected, ReviewCanceled)}
# What the editor wrote for the people notified, per event (kinto-remote-settings' fields).
COMMENT_FIELD = {"ReviewRequested": "last_editor_comment", "ReviewRejected": "last_reviewer_comment"}
