"""Remote Settings' review workflow, decided inside Kinto: the rules of kinto-remote-settings' signer, applied in
the editor's own request and transaction, with its status codes and messages. The signing service then carries
out what was accepted; it never decides again.

In each request to a configured source collection (the signing service's own principal excepted):
- a status change is checked (allowed transitions, editors/reviewers groups, requester != approver); an accepted
  review request records who asked (`last_review_request_by/date`) in the same transaction;
- a new source collection gets its `{cid}-editors` (its creator as member) and `{cid}-reviewers` groups, allowed
  to write it, and asks the service for its first signature (an empty preview and destination, then `signed`);
- the tracking fields (`last_*_by/date`) cannot be written by hand;
- a record written, changed or deleted puts the collection back to `work-in-progress` with `last_edit_by/date`;
- a record holding a float is refused (unless `signer.allow_floats`);
and a preview or destination collection whose source exists cannot be deleted; a deleted source takes its
groups with it (and its preview and destination, with `hard_delete_destination_on_source_deletion`). Accepted
review requests, approvals, rejections and rollbacks are announced as kinto-remote-settings' review events
(`events`), which kinto-emailer, when installed, turns into mails. `GET /v1/` announces the
`signer` capability (resources, groups, flags) that kinto-admin's signoff UI and Remote Settings' tools read.

Enable with `kinto.includes = kinto_signer_webhook.signoff`. Settings, named as kinto-remote-settings names them,
each readable per collection (`signer.<bid>.<cid>.<name>`), per bucket (`signer.<bid>.<name>`) or globally:
  signer.resources = /buckets/main-workspace -> /buckets/main-preview -> /buckets/main   (one per line)
  signer.to_review_enabled = false
  signer.editors_group = {collection_id}-editors
  signer.reviewers_group = {collection_id}-reviewers
  signer.allow_floats = false
  signer.auto_create_resources = false                        (true: the source buckets and collections named
  signer.auto_create_resources_principals = system.Authenticated  by `resources` are created at start-up,
                                                               writable by these principals)
  signer.hard_delete_destination_on_source_deletion = false   (true: a deleted source's preview and destination
                                                               are deleted too, with no tombstone; false: emptied
                                                               by the service, leaving tombstones, and signed)
and one of ours:
  signer.service_userid = account:signer     (the Kinto principal the signing service authenticates as; its
                                              writes are the signer's, announced as `plugin_userid`)
"""

import copy
import datetime
import functools
import sys

import transaction
from kinto.core import errors
from kinto.core.errors import ERRORS
from kinto.core.events import ACTIONS, ResourceChanged
from kinto.core.storage.exceptions import ObjectNotFoundError, UnicityError
from pyramid import httpexceptions
from pyramid.authorization import Everyone as EVERYONE
from pyramid.events import ApplicationCreated
from pyramid.exceptions import ConfigurationError
from pyramid.interfaces import IAuthorizationPolicy
from pyramid.settings import asbool, aslist

from . import events, rules

CAPABILITY = "signer"
# Where a request keeps the review events it will notify before committing.
PENDING_EVENTS = "kinto_signer_webhook.review_events"
VERSION = "0.2.0"
DEFAULTS = {
    "to_review_enabled": "false",
    "editors_group": "{collection_id}-editors",
    "reviewers_group": "{collection_id}-reviewers",
    "allow_floats": "false",
    "hard_delete_destination_on_source_deletion": "false",
}


def parse_resources(text):
    """`source -> [preview ->] destination` per line (`;` as kinto-signer's older separator), each a bucket URI
    (the whole bucket) or a collection URI. Returns the resources keyed by their source URI."""
    resources = {}
    for line in filter(None, (line.strip() for line in (text or "").splitlines())):
        uris = line.replace(";", " ").replace("->", " ").split()
        if len(uris) not in (2, 3):
            raise ConfigurationError(f"signer.resources: {line!r} is not 'source -> [preview ->] destination'")
        parsed = [parse_uri(uri, line) for uri in uris]
        if len({p["collection"] is None for p in parsed}) != 1:
            raise ConfigurationError(f"signer.resources: {line!r} mixes buckets and collections")
        resource = {"source": parsed[0], "destination": parsed[-1]}
        if len(parsed) == 3:
            resource["preview"] = parsed[1]
        key = uris[0].rstrip("/")
        if key in resources:
            raise ConfigurationError(f"signer.resources: {uris[0]} is the source of two resources")
        resources[key] = resource
    return resources


def parse_uri(uri, line):
    parts = uri.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "buckets" and parts[1]:
        return {"bucket": parts[1], "collection": None}
    if len(parts) == 4 and parts[0] == "buckets" and parts[2] == "collections" and parts[1] and parts[3]:
        return {"bucket": parts[1], "collection": parts[3]}
    raise ConfigurationError(
        f"signer.resources: {uri!r} in {line!r} is neither /buckets/<b> nor /buckets/<b>/collections/<c>"
    )


def setting_prefixes(bucket_id, collection_id):
    """Where a resource's settings are looked up first: per collection, then per bucket (then globally)."""
    bucket = [f"{bucket_id}."]
    return [f"{bucket_id}.{collection_id}.", *bucket] if collection_id else bucket


class Signoff:
    """The configured resources and their settings, and the checks the subscribers run."""

    def __init__(self, settings):
        self.settings = settings
        self.resources = parse_resources(settings.get("signer.resources"))
        self.service_userid = settings.get("signer.service_userid")
        if not self.service_userid:
            raise ConfigurationError(
                "signer.service_userid is required: the Kinto principal the signing service authenticates as "
                "(its writes carry out the workflow and are not checked against it)"
            )
        self.global_review = asbool(self.setting("to_review_enabled", []))

    def setting(self, name, prefixes):
        for prefix in prefixes:
            value = self.settings.get(f"signer.{prefix}{name}")
            if value is not None:
                return value
        return self.settings.get(f"signer.{name}", DEFAULTS[name])

    def resource(self, bucket_id, collection_id):
        """The resource whose source is this collection (a bucket-wide one made specific), with its settings."""
        explicit = self.resources.get(f"/buckets/{bucket_id}/collections/{collection_id}")
        resource = copy.deepcopy(explicit or self.resources.get(f"/buckets/{bucket_id}"))
        if resource is None:
            return None
        for role in ("source", "preview", "destination"):
            if role in resource:
                resource[role]["collection"] = resource[role]["collection"] or collection_id
        prefixes = setting_prefixes(bucket_id, collection_id)
        names = {"collection_id": collection_id, "bucket_id": bucket_id}
        resource["to_review_enabled"] = asbool(self.setting("to_review_enabled", prefixes))
        resource["allow_floats"] = asbool(self.setting("allow_floats", prefixes))
        for group in ("editors_group", "reviewers_group"):
            resource[group] = self.setting(group, prefixes).format(**names)
        return resource

    def is_service(self, request):
        return request.prefixed_userid == self.service_userid

    def sources_publishing_to(self, bucket_id, collection_id):
        """The source collections whose preview or destination is this collection: an explicit resource naming it,
        else a bucket-wide one (unless an explicit resource for the same source collection overrides it)."""
        explicit, bucket_wide = [], []
        for resource in self.resources.values():
            for role in ("preview", "destination"):
                target = resource.get(role)
                if target is None or target["bucket"] != bucket_id:
                    continue
                if target["collection"] == collection_id:
                    explicit.append(resource["source"])
                elif target["collection"] is None:
                    source = resource["source"]
                    if f"/buckets/{source['bucket']}/collections/{collection_id}" not in self.resources:
                        bucket_wide.append({"bucket": source["bucket"], "collection": collection_id})
        return explicit or bucket_wide

    def capability(self):
        """As kinto-remote-settings announces it: `to_review_enabled` on a resource only where it differs."""
        exposed = []
        for resource in self.resources.values():
            entry = {role: dict(resource[role]) for role in ("source", "preview", "destination") if role in resource}
            prefixes = setting_prefixes(resource["source"]["bucket"], resource["source"]["collection"])
            review = asbool(self.setting("to_review_enabled", prefixes))
            if review != self.global_review:
                entry["to_review_enabled"] = review
            exposed.append(entry)
        return {
            "version": VERSION,
            "resources": exposed,
            "plugin_userid": self.service_userid,
            "group_check_enabled": True,
            "editors_group": self.setting("editors_group", []),
            "reviewers_group": self.setting("reviewers_group", []),
            "to_review_enabled": self.global_review,
        }


def refuse(refusal):
    """Kinto's error answer; raising it aborts the request's transaction, so nothing of it commits."""
    if refusal.status == 403:
        raise errors.http_error(httpexceptions.HTTPForbidden(), errno=ERRORS.FORBIDDEN, message=refusal.message)
    raise errors.http_error(
        httpexceptions.HTTPBadRequest(), errno=ERRORS.INVALID_POSTED_DATA, message=refusal.message
    )


def undo_on_memory(storage, undo):
    """The memory backend keeps what a refused request wrote (it has no transaction to abort): put it back, so a
    refused status is not found later by the service's change feed. PostgreSQL rolls back on its own."""
    if type(storage).__module__ == "kinto.core.storage.memory":
        undo()


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def update_collection(storage, bucket_id, collection_id, fields):
    parent_id = f"/buckets/{bucket_id}"
    collection = storage.get(resource_name="collection", parent_id=parent_id, object_id=collection_id)
    collection.update(fields)
    collection.pop("last_modified", None)
    return storage.update(resource_name="collection", parent_id=parent_id, object_id=collection_id, obj=collection)


def check_collection_change(event, signoff):
    """Status and tracking rules for a source collection created or changed by anyone but the service."""
    request = event.request
    if signoff.is_service(request):
        return
    storage = request.registry.storage
    bucket_id = event.payload["bucket_id"]
    principals = set(request.effective_principals)
    for impacted in event.impacted_objects:
        old, new = impacted.get("old") or {}, impacted["new"]
        resource = signoff.resource(bucket_id, new["id"])
        if resource is None:
            continue
        group_uri = functools.partial("/buckets/{}/groups/{}".format, bucket_id)
        caller = rules.Caller(
            userid=request.prefixed_userid,
            is_editor=group_uri(resource["editors_group"]) in principals,
            is_reviewer=group_uri(resource["reviewers_group"]) in principals,
        )
        refusal = rules.status_change(
            old, new, caller, resource["to_review_enabled"], resource["editors_group"], resource["reviewers_group"]
        ) or rules.tracking_change(old, new)
        if refusal is not None:
            undo_on_memory(storage, functools.partial(restore_collection, storage, bucket_id, old, new))
            refuse(refusal)
        body = (request.validated.get("body") or {}).get("data") or {}
        tracked = rules.tracking_after(old.get("status"), new.get("status"), request.prefixed_userid, now(), body)
        if tracked:
            update_collection(storage, bucket_id, new["id"], tracked)
        if not old:
            create_groups(request, bucket_id, new["id"], resource)
            create_targets(request.registry.permission, storage, resource, signoff.service_userid)
            ask_first_signature(storage, bucket_id, new)
        else:
            announce_review(event, impacted, dict(new, **tracked), resource)


def announce_review(event, impacted, new, resource):
    """Queues the review event this accepted change announces; it is notified just before the request commits
    (after every subscriber of the change ran), so that kinto-emailer sends its mails only if the change commits.
    `new` is the collection as the request leaves it: a review requested without a comment announces none (where
    kinto-remote-settings repeats the previous request's comment, which its own write then clears)."""
    old = impacted["old"]
    name = rules.review_event(old.get("status"), new.get("status"))
    if name is None:
        return
    comment_field = events.COMMENT_FIELD.get(name)
    payload = dict(event.payload, collection_id=new["id"],
                   uri=f"/buckets/{event.payload['bucket_id']}/collections/{new['id']}")
    review = events.BY_NAME[name](
        request=event.request,
        payload=payload,
        impacted_objects=[impacted],
        resource=resource,
        comment=new.get(comment_field, "") if comment_field else None,
    )
    request = event.request
    pending = request.bound_data.get(PENDING_EVENTS)
    if pending is None:
        pending = request.bound_data[PENDING_EVENTS] = []
        transaction.get().addBeforeCommitHook(notify_review_events, args=(request,))
    pending.append(review)


def notify_review_events(request):
    for review in request.bound_data.pop(PENDING_EVENTS, []):
        request.registry.notify(review)


def ask_first_signature(storage, bucket_id, new):
    """A new source collection is published as it is, unreviewed (it holds nothing yet): its preview and
    destination are signed and it becomes `signed`, as kinto-remote-settings does inside the creating request.
    Here the service does it, asked by the status `to-sign`, also written into the event (`new`) so that the
    listener announces it. A record written before the service ran puts the collection back to work in progress
    and the signature is not made: nothing reaches the destination unreviewed."""
    update_collection(storage, bucket_id, new["id"], {"status": rules.TO_SIGN})
    new["status"] = rules.TO_SIGN


def create_targets(permission, storage, resource, service_userid):
    """A new source's preview and destination exist from its creating request on, readable by everyone and
    writable by the service, as kinto-remote-settings creates them in that request: readers (kinto-admin's
    signoff view, clients) find them, empty, even before the service's first signature, or when a record written
    at once voids it. Existing buckets and collections are left as they are."""
    for role in ("preview", "destination"):
        target = resource.get(role)
        if target is None:
            continue
        bucket_uri = f"/buckets/{target['bucket']}"
        wanted = (
            ("bucket", "", bucket_uri, target["bucket"], {"write": [service_userid]}),
            (
                "collection",
                bucket_uri,
                f"{bucket_uri}/collections/{target['collection']}",
                target["collection"],
                {"read": [EVERYONE], "write": [service_userid]},
            ),
        )
        for resource_name, parent_id, uri, object_id, permissions in wanted:
            create_if_missing(storage, permission, resource_name, parent_id, uri, object_id, permissions)


def create_if_missing(storage, permission, resource_name, parent_id, uri, object_id, permissions):
    """Creates a bucket or collection with these permissions; one that exists is left as it is."""
    try:
        storage.create(resource_name=resource_name, parent_id=parent_id, obj={"id": object_id})
    except UnicityError:
        return
    permission.replace_object_permissions(uri, permissions)


def create_groups(request, bucket_id, collection_id, resource):
    """A new source collection gets its editors group (its creator as member) and reviewers group, both writable
    by the creator, and both may write the collection, as kinto-remote-settings does. A creator who may not
    create groups in the bucket gets none; existing groups are kept as they are."""
    bucket_uri = f"/buckets/{bucket_id}"
    permission = request.registry.permission
    authz = request.registry.getUtility(IAuthorizationPolicy)
    if not permission.check_permission(
        request.prefixed_principals, authz.get_bound_permissions(bucket_uri, "group:create")
    ):
        return
    userid = request.prefixed_userid
    collection_uri = f"{bucket_uri}/collections/{collection_id}"
    for group, members in ((resource["editors_group"], [userid]), (resource["reviewers_group"], [])):
        group_uri = f"{bucket_uri}/groups/{group}"
        permission.add_principal_to_ace(collection_uri, "write", group_uri)
        try:
            request.registry.storage.create(
                resource_name="group", parent_id=bucket_uri, obj={"id": group, "members": members}
            )
        except UnicityError:
            continue  # kept as it is, members and all
        permission.replace_object_permissions(group_uri, {"write": [userid]})
        for member in members:
            # What Kinto's own group views do on a change: the member now holds the group's principal.
            permission.add_user_principal(member, group_uri)


def restore_collection(storage, bucket_id, old, new):
    parent_id = f"/buckets/{bucket_id}"
    if old:
        storage.update(resource_name="collection", parent_id=parent_id, object_id=old["id"], obj=old)
    else:
        storage.delete(resource_name="collection", parent_id=parent_id, object_id=new["id"], with_deleted=False)


def restore_records(storage, collection_uri, impacted_objects):
    for impacted in impacted_objects:
        old, new = impacted.get("old"), impacted["new"]
        if old:
            storage.update(resource_name="record", parent_id=collection_uri, object_id=old["id"], obj=old)
        else:
            storage.delete(resource_name="record", parent_id=collection_uri, object_id=new["id"], with_deleted=False)


def check_record_change(event, signoff):
    """Floats refused in source records; any edit puts the collection back to work in progress."""
    request = event.request
    if signoff.is_service(request):
        return
    payload = event.payload
    resource = signoff.resource(payload["bucket_id"], payload["collection_id"])
    if resource is None:
        return
    storage = request.registry.storage
    if not resource["allow_floats"] and payload["action"] in (ACTIONS.CREATE.value, ACTIONS.UPDATE.value):
        for impacted in event.impacted_objects:
            refusal = rules.float_refusal(impacted["new"])
            if refusal is not None:
                collection_uri = f"/buckets/{payload['bucket_id']}/collections/{payload['collection_id']}"
                undo = functools.partial(restore_records, storage, collection_uri, event.impacted_objects)
                undo_on_memory(storage, undo)
                refuse(refusal)
    try:
        update_collection(
            storage,
            payload["bucket_id"],
            payload["collection_id"],
            rules.edit_tracking(request.prefixed_userid, now()),
        )
    except ObjectNotFoundError:
        pass  # the collection is being deleted with its records


def prevent_collection_delete(event, signoff):
    """A preview or destination stays while its source exists: clients would lose the collection they verify."""
    storage = event.request.registry.storage
    bucket_id = event.payload["bucket_id"]
    for impacted in event.impacted_objects:
        collection_id = impacted["old"]["id"]
        for source in signoff.sources_publishing_to(bucket_id, collection_id):
            try:
                storage.get(resource_name="collection", parent_id=f"/buckets/{source['bucket']}",
                            object_id=source["collection"])
            except ObjectNotFoundError:
                continue
            refuse(rules.forbidden("Collection is in use."))


def cleanup_on_source_delete(event, signoff):
    """A deleted source collection takes its editors and reviewers groups with it. Its preview and destination
    are emptied and signed by the service (the listener relays the deletion, which queues a cleanup job), or,
    with `signer.hard_delete_destination_on_source_deletion`, deleted here with everything under them, leaving
    no tombstone, as kinto-remote-settings does."""
    request = event.request
    storage, permission = request.registry.storage, request.registry.permission
    bucket_id = event.payload["bucket_id"]
    for impacted in event.impacted_objects:
        collection_id = impacted["old"]["id"]
        resource = signoff.resource(bucket_id, collection_id)
        if resource is None:
            continue
        hard = asbool(signoff.setting("hard_delete_destination_on_source_deletion",
                                      setting_prefixes(bucket_id, collection_id)))
        for group in (resource["editors_group"], resource["reviewers_group"]):
            try:
                storage.delete(resource_name="group", parent_id=f"/buckets/{bucket_id}", object_id=group,
                               with_deleted=not hard)
            except ObjectNotFoundError:
                pass
        if not hard:
            continue
        for role in ("preview", "destination"):
            if role not in resource:
                continue
            target_bucket, target_collection = resource[role]["bucket"], resource[role]["collection"]
            bucket_uri = f"/buckets/{target_bucket}"
            collection_uri = f"{bucket_uri}/collections/{target_collection}"
            storage.delete_all(resource_name=None, parent_id=collection_uri, with_deleted=False)
            try:
                storage.delete(resource_name="collection", parent_id=bucket_uri, object_id=target_collection,
                               with_deleted=False)
            except ObjectNotFoundError:
                pass
            for parent in (collection_uri, collection_uri + "/*"):
                storage.purge_deleted(resource_name=None, parent_id=parent)
                permission.delete_object_permissions(parent)


def auto_create_resources(event, signoff):
    """At start-up, each configured source bucket (and source collection, where a resource names one) exists,
    writable by `signer.auto_create_resources_principals`; what exists is left as it is. As kinto-remote-settings
    does, outside any request, in a transaction of its own."""
    registry = event.app.registry
    storage, permission = registry.storage, registry.permission
    writers = aslist(signoff.settings.get("signer.auto_create_resources_principals", "system.Authenticated"))
    with transaction.manager:
        for resource in signoff.resources.values():
            bucket_id, collection_id = resource["source"]["bucket"], resource["source"]["collection"]
            bucket_uri = f"/buckets/{bucket_id}"
            wanted = [("bucket", "", bucket_uri, bucket_id)]
            if collection_id:
                wanted.append(("collection", bucket_uri, f"{bucket_uri}/collections/{collection_id}", collection_id))
            for resource_name, parent_id, uri, object_id in wanted:
                create_if_missing(storage, permission, resource_name, parent_id, uri, object_id, {"write": writers})


def includeme(config):
    signoff = Signoff(config.get_settings())
    cap = signoff.capability()
    config.add_api_capability(
        CAPABILITY,
        description="Digital signatures for integrity and authenticity of records, by kinto-signer-rs.",
        url="https://github.com/mozilla/remote-settings/tree/main/kinto-remote-settings",
        **cap,
    )
    config.registry.signoff = signoff
    collection_writes = {"for_actions": (ACTIONS.CREATE, ACTIONS.UPDATE), "for_resources": ("collection",)}
    config.add_subscriber(functools.partial(check_record_change, signoff=signoff), ResourceChanged,
                          for_resources=("record",))
    config.add_subscriber(functools.partial(check_collection_change, signoff=signoff), ResourceChanged,
                          **collection_writes)
    collection_deletes = {"for_actions": (ACTIONS.DELETE,), "for_resources": ("collection",)}
    config.add_subscriber(functools.partial(prevent_collection_delete, signoff=signoff), ResourceChanged,
                          **collection_deletes)
    config.add_subscriber(functools.partial(cleanup_on_source_delete, signoff=signoff), ResourceChanged,
                          **collection_deletes)
    # Not while `kinto migrate` runs: the tables may not exist yet.
    if asbool(signoff.settings.get("signer.auto_create_resources", False)) and "migrate" not in sys.argv:
        config.add_subscriber(functools.partial(auto_create_resources, signoff=signoff), ApplicationCreated)
    try:
        from kinto_emailer import build_notification
    except ImportError:
        return
    for review in (events.ReviewRequested, events.ReviewApproved, events.ReviewRejected):
        config.add_subscriber(build_notification, review)
