"""Bulk writes of a destination collection's records, for the signing service's push.

`POST /v1/buckets/{bid}/collections/{cid}/signer-push` with `{"put": [records], "delete": [ids]}` applies every
write in the request's one transaction, through Kinto's storage layer, as kinto-signer does from inside Kinto:
one statement per record instead of one full sub-request (authentication, permission queries, a read before the
write, the collection timestamp computed twice) per record in `/v1/batch`. Records are stored as sent, without
`last_modified` (the server assigns fresh timestamps), and each write emits the `ResourceChanged` event Kinto's
own views emit, so the history and changes plugins, and listeners such as this package's, see them.

Who may call it: principals with `write` on the collection or on its bucket, in the permission backend or in
the settings (`kinto.bucket_write_principals`, `kinto.collection_write_principals`): a narrower rule than
Kinto's record-level permissions, since the signer owns its destinations. Records are not checked against the collection's
JSON schema (they come from a source that was). The server announces the endpoint as the API capability
`signer-push`; the service uses `/v1/batch` where it is absent. Enable it with
`kinto.includes = kinto_signer_webhook.push`.
"""

from kinto.core import Service
from kinto.core.errors import ERRORS, http_error, raise_invalid
from kinto.core.events import ACTIONS
from kinto.core.storage import Filter
from kinto.core.storage.exceptions import ObjectNotFoundError
from kinto.core.utils import COMPARISON
from kinto.views import RelaxedUUID
from pyramid import httpexceptions
from pyramid.security import NO_PERMISSION_REQUIRED
from pyramid.settings import asbool, aslist

CAPABILITY = "signer-push"

push = Service(
    name="signer-push",
    description="Bulk writes of a collection's records for the signing service",
    path="/buckets/{bucket_id}/collections/{collection_id}/signer-push",
)

# Record ids as Kinto's records endpoint accepts them.
RECORD_ID = RelaxedUUID()


@push.post(permission=NO_PERMISSION_REQUIRED)
def push_records(request):
    bucket_id = request.matchdict["bucket_id"]
    collection_id = request.matchdict["collection_id"]
    bucket_uri = f"/buckets/{bucket_id}"
    collection_uri = f"{bucket_uri}/collections/{collection_id}"

    if request.authenticated_userid is None:
        # Kinto's forbidden view answers 401 to anonymous callers.
        raise httpexceptions.HTTPForbidden()
    principals = request.prefixed_principals
    settings = request.registry.settings
    # As Kinto's own views: principals granted in the settings (`kinto.bucket_write_principals`, ...), then
    # those the permission backend knows.
    granted = set(aslist(settings.get("bucket_write_principals", "")))
    granted |= set(aslist(settings.get("collection_write_principals", "")))
    allowed = bool(granted & set(principals)) or request.registry.permission.check_permission(
        principals, [(collection_uri, "write"), (bucket_uri, "write")]
    )
    if not allowed:
        raise http_error(
            httpexceptions.HTTPForbidden(),
            errno=ERRORS.FORBIDDEN,
            message=f"{collection_uri}: write permission required",
        )

    puts, deletes = parse_body(request)
    storage = request.registry.storage
    try:
        storage.get(resource_name="collection", parent_id=bucket_uri, object_id=collection_id)
    except ObjectNotFoundError:
        raise http_error(
            httpexceptions.HTTPNotFound(),
            errno=ERRORS.MISSING_RESOURCE,
            message=f"{collection_uri} does not exist",
        )

    ids = [r["id"] for r in puts] + deletes
    before = {
        r["id"]: r
        for r in storage.list_all(
            resource_name="record",
            parent_id=collection_uri,
            filters=[Filter("id", ids, COMPARISON.IN)],
        )
    } if ids else {}

    def notify(obj, action, old=None):
        request.notify_resource_event(
            parent_id=collection_uri,
            timestamp=obj["last_modified"],
            data=obj,
            action=action,
            old=old,
            resource_name="record",
            # Events gather every record of one action: nothing record-specific in their payload.
            resource_data={"bucket_id": bucket_id, "collection_id": collection_id},
        )

    for record in puts:
        old = before.get(record["id"])
        written = storage.update(
            resource_name="record", parent_id=collection_uri, object_id=record["id"], obj=record
        )
        notify(written, ACTIONS.UPDATE if old else ACTIONS.CREATE, old)
    deleted = 0
    for record_id in deletes:
        old = before.get(record_id)
        if old is None:
            continue
        tombstone = storage.delete(resource_name="record", parent_id=collection_uri, object_id=record_id)
        notify(tombstone, ACTIONS.DELETE, old)
        deleted += 1

    timestamp = storage.resource_timestamp(resource_name="record", parent_id=collection_uri)
    request.response.headers["ETag"] = f'"{timestamp}"'
    return {"written": len(puts), "deleted": deleted, "timestamp": timestamp}


def parse_body(request):
    """`put` (records, each with a valid `id`, no `last_modified`) and `delete` (ids), each id at most once."""
    try:
        body = request.json_body
    except ValueError:
        raise_invalid(request, name="body", description="body is not JSON")
    if not isinstance(body, dict):
        raise_invalid(request, name="body", description="body must be an object")
    puts = body.get("put", [])
    deletes = body.get("delete", [])
    if not isinstance(puts, list) or not all(isinstance(r, dict) for r in puts):
        raise_invalid(request, name="put", description="put must be a list of records")
    if not isinstance(deletes, list) or not all(isinstance(i, str) for i in deletes):
        raise_invalid(request, name="delete", description="delete must be a list of record ids")
    seen = set()
    for record_id in [r.get("id") for r in puts] + deletes:
        if not isinstance(record_id, str) or not RECORD_ID.match(record_id):
            raise_invalid(request, name="id", description=f"invalid record id: {record_id!r}")
        if record_id in seen:
            raise_invalid(request, name="id", description=f"record {record_id} written twice")
        seen.add(record_id)
    for record in puts:
        record.pop("last_modified", None)
    return puts, deletes


def includeme(config):
    # A read-only server takes no writes (Kinto refuses them before any view): nothing to announce.
    if asbool(config.get_settings().get("readonly", False)):
        return
    config.add_api_capability(
        CAPABILITY,
        description="Bulk writes of a collection's records in one transaction, for kinto-signer-rs.",
    )
    config.add_cornice_service(push)
