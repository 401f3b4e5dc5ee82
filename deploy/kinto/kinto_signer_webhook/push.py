"""Two endpoints for the signing service, for what Kinto's HTTP API serves slowly or not at all.

`POST /v1/buckets/{bid}/collections/{cid}/signer-push` with `{"put": [records], "delete": [ids]}` applies every
write in the request's one transaction, through Kinto's storage layer, as kinto-signer does from inside Kinto:
one statement per record instead of one full sub-request (authentication, permission queries, a read before the
write, the collection timestamp computed twice) per record in `/v1/batch`. Records are stored as sent, without
`last_modified` (the server assigns fresh timestamps), and each write emits the `ResourceChanged` event Kinto's
own views emit, so the history and changes plugins, and listeners such as this package's, see them. Records are
not checked against the collection's JSON schema (they come from a source that was).

`GET /v1/buckets/{bid}/collections/{cid}/signer-visible` answers `{"visible_before": <ms>}`: every write to the
collection's records stamped before that instant is visible to reads made after the call. On the PostgreSQL
backend a write takes its timestamp when its statement runs and becomes visible when its transaction commits, so
a listing can miss a write that commits later with an older timestamp. The service asks before each listing and
re-reads from there on its next refresh, instead of guessing how long transactions last. A records listing asked
with the request header `Signer-Visible: 1` carries the same answer in its `Signer-Visible-Before` response
header, computed before the records are read: one round trip instead of two (capability field
`visible_in_listings`). The answer reads Kinto's PostgreSQL tables, which are not a public API of Kinto: at
start-up the plugin checks they are as it reads them, and Kinto refuses to start, saying so, where they are not.

Who may call them: principals with `write` (for `signer-push`) or `read` (for `signer-visible`) on the
collection or its bucket, as Kinto grants them in its permission backend or its settings
(`kinto.bucket_write_principals`, ...): narrower than Kinto's record-level permissions, since the signer owns
the collections it writes.

An atomic publication (`stamps_from`, `if_match`, `metadata` in the body) writes every record with the timestamp
the service signed it with (deletions first, then puts, one stamp after the other) and the signature with them,
in one transaction: clients see the previous signed state or the next one, never records the signature does not
cover. It is refused with 412 when the records are not at `if_match`, or would not end at the signed timestamp.

The server announces both as the API capability `signer-push` (`atomic: true` for atomic publications); the
service uses `/v1/batch` and a guessed overlap where it is absent. Enable them with
`kinto.includes = kinto_signer_webhook.push`.
"""

import sys
import time

import kinto
from kinto.core import Service
from kinto.core.errors import ERRORS, http_error, raise_invalid
from kinto.core.events import ACTIONS
from kinto.core.storage import Filter
from kinto.core.storage.exceptions import ObjectNotFoundError
from kinto.core.utils import COMPARISON
from kinto.views import RelaxedUUID
from pyramid import httpexceptions
from pyramid.events import ApplicationCreated, ContextFound, NewResponse
from pyramid.exceptions import ConfigurationError
from pyramid.security import NO_PERMISSION_REQUIRED
from pyramid.settings import asbool, aslist

CAPABILITY = "signer-push"
ASK_HEADER = "Signer-Visible"
ANSWER_HEADER = "Signer-Visible-Before"
COLLECTION = "/buckets/{bucket_id}/collections/{collection_id}"

push = Service(
    name="signer-push",
    description="Bulk writes of a collection's records, for the signing service",
    path=COLLECTION + "/signer-push",
)

visible = Service(
    name="signer-visible",
    description="Before when every write to a collection's records is visible, for the signing service",
    path=COLLECTION + "/signer-visible",
)

# Record ids as Kinto's records endpoint accepts them.
RECORD_ID = RelaxedUUID()


def collection_of(request, permission):
    """The collection's bucket and collection URIs, once the caller is known to hold `permission` (or `write`,
    which implies `read`) on it or its bucket, anonymous callers included (a collection readable by
    `system.Everyone`); otherwise 401 for anonymous callers and 403 for others, then 404 (after the permission
    check, which reveals nothing) when it does not exist."""
    bucket_id = request.matchdict["bucket_id"]
    bucket_uri = f"/buckets/{bucket_id}"
    collection_uri = f"{bucket_uri}/collections/{request.matchdict['collection_id']}"
    permissions = {permission, "write"}
    principals = request.prefixed_principals
    settings = request.registry.settings
    granted = {
        principal
        for resource in ("bucket", "collection")
        for p in permissions
        for principal in aslist(settings.get(f"{resource}_{p}_principals", ""))
    }
    allowed = bool(granted & set(principals)) or request.registry.permission.check_permission(
        principals, [(uri, p) for uri in (collection_uri, bucket_uri) for p in permissions]
    )
    if not allowed and request.authenticated_userid is None:
        # Kinto's forbidden view answers 401 to anonymous callers.
        raise httpexceptions.HTTPForbidden()
    if not allowed:
        raise http_error(
            httpexceptions.HTTPForbidden(),
            errno=ERRORS.FORBIDDEN,
            message=f"{collection_uri}: {permission} permission required",
        )
    try:
        request.registry.storage.get(
            resource_name="collection", parent_id=bucket_uri, object_id=request.matchdict["collection_id"]
        )
    except ObjectNotFoundError:
        raise http_error(  # noqa: B904 - Kinto's error answer, not an error in handling one
            httpexceptions.HTTPNotFound(),
            errno=ERRORS.MISSING_RESOURCE,
            message=f"{collection_uri} does not exist",
        )
    return bucket_uri, collection_uri


@push.post(permission=NO_PERMISSION_REQUIRED)
def push_records(request):
    bucket_uri, collection_uri = collection_of(request, "write")
    puts, deletes, publication = parse_body(request)
    storage = request.registry.storage

    ids = [r["id"] for r in puts] + deletes
    before = {}
    if ids:
        listed = storage.list_all(
            resource_name="record", parent_id=collection_uri, filters=[Filter("id", ids, COMPARISON.IN)]
        )
        before = {r["id"]: r for r in listed}

    # Events gather every record of one action: nothing record-specific in their payload.
    resource_data = {k: request.matchdict[k] for k in ("bucket_id", "collection_id")}

    def notify(obj, action, old=None):
        request.notify_resource_event(
            parent_id=collection_uri,
            timestamp=obj["last_modified"],
            data=obj,
            action=action,
            old=old,
            resource_name="record",
            resource_data=resource_data,
        )

    stamps = iter(())
    if publication is not None:
        current = storage.resource_timestamp(resource_name="record", parent_id=collection_uri)
        if current != publication["if_match"]:
            modified_meanwhile(f"{collection_uri} records are at {current}, not {publication['if_match']}")
        # Deletions first, then puts: each write takes the next stamp, in the order the service signed them.
        stamps = iter(range(publication["stamps_from"], publication["stamps_from"] + len(ids)))
    deleted = 0
    for record_id in deletes:
        stamp = next(stamps, None)
        old = before.get(record_id)
        if old is None:
            continue
        tombstone = storage.delete(
            resource_name="record", parent_id=collection_uri, object_id=record_id, last_modified=stamp
        )
        notify(tombstone, ACTIONS.DELETE, old)
        deleted += 1
    for record in puts:
        stamp = next(stamps, None)
        if stamp is not None:
            record["last_modified"] = stamp
        old = before.get(record["id"])
        written = storage.update(
            resource_name="record", parent_id=collection_uri, object_id=record["id"], obj=record
        )
        notify(written, ACTIONS.UPDATE if old else ACTIONS.CREATE, old)

    timestamp = storage.resource_timestamp(resource_name="record", parent_id=collection_uri)
    if publication is not None:
        expected = publication["stamps_from"] + len(ids) - 1 if ids else publication["if_match"]
        if timestamp != expected:
            modified_meanwhile(f"{collection_uri} records would be at {timestamp}, not the signed {expected}")
        publish_metadata(request, bucket_uri, publication["metadata"])
    request.response.headers["ETag"] = f'"{timestamp}"'
    return {"written": len(puts), "deleted": deleted, "timestamp": timestamp}


def modified_meanwhile(message):
    """412: the records are not where the service signed them from; nothing of the request commits."""
    raise http_error(httpexceptions.HTTPPreconditionFailed(), errno=ERRORS.MODIFIED_MEANWHILE, message=message)


def publish_metadata(request, bucket_uri, fields):
    """The signature (and the fields published with it) set on the collection in the records' transaction."""
    collection_id = request.matchdict["collection_id"]
    storage = request.registry.storage
    old = storage.get(resource_name="collection", parent_id=bucket_uri, object_id=collection_id)
    new = {**old, **fields}
    new.pop("last_modified", None)
    written = storage.update(resource_name="collection", parent_id=bucket_uri, object_id=collection_id, obj=new)
    request.notify_resource_event(
        parent_id=bucket_uri,
        timestamp=written["last_modified"],
        data=written,
        action=ACTIONS.UPDATE,
        old=old,
        resource_name="collection",
        resource_data={"bucket_id": request.matchdict["bucket_id"], "id": collection_id},
    )


@visible.get(permission=NO_PERMISSION_REQUIRED)
def writes_visible_before(request):
    _, collection_uri = collection_of(request, "read")
    storage = request.registry.storage
    answer = visible_before(storage, collection_uri)
    if answer is None:
        raise http_error(
            httpexceptions.HTTPNotImplemented(),
            errno=ERRORS.UNDEFINED,
            message=f"{type(storage).__module__}: in-flight writes unknown",
        )
    return {"visible_before": answer}


def visible_before(storage, collection_uri):
    """Before when every write to the collection's records is visible; None where the storage cannot tell."""
    backend = type(storage).__module__
    if backend == "kinto.core.storage.postgresql":
        return postgresql_visible_before(storage, collection_uri)
    if backend == "kinto.core.storage.memory":
        # A write is stamped (after the newest stamp) and stored in one locked step: visible as stamped.
        newest = storage.resource_timestamp(resource_name="record", parent_id=collection_uri)
        return max(int(time.time() * 1000), newest + 1)
    return None


def note_visible_before(event):
    """For a records listing that asks (`Signer-Visible`), the answer of `signer-visible`, computed once the route
    is known and before the view reads the records. Kept on the request until the response is known to be the
    listing (only a caller allowed to read it learns anything)."""
    request = event.request
    route = request.matched_route
    if (
        request.method != "GET"
        or route is None
        or route.name != "record-plural"
        or request.headers.get(ASK_HEADER) != "1"
    ):
        return
    collection_uri = "/buckets/{bucket_id}/collections/{collection_id}".format(**request.matchdict)
    request.signer_visible_before = visible_before(request.registry.storage, collection_uri)


def add_visible_before(event):
    answer = getattr(event.request, "signer_visible_before", None)
    if answer is not None and event.response.status_code == 200:
        event.response.headers[ANSWER_HEADER] = str(answer)


def postgresql_visible_before(storage, collection_uri):
    """Every write of a transaction is stamped after the transaction started, so while some transaction that wrote
    (a transaction id is assigned at the first write) is in flight, the answer is the start of the oldest one.
    When none is, any write still to come is stamped after the clock and after the collection's newest stamp, if
    that stamp was read before the activity was (Kinto's trigger stamps past what the writing statement sees), so
    the newest stamp is read first, and the clock at this transaction's start, earlier than both. Reads do not
    count. Kinto's database role sees its own sessions in `pg_stat_activity`: writers under another role would
    not be seen; and tombstones purged during the call could let a write be stamped below the newest stamp read."""
    import sqlalchemy as sa  # there with the PostgreSQL backend; a memory-only install may lack it

    newest = """
    SELECT as_epoch(now()::TIMESTAMP) AS started,
           (SELECT as_epoch(MAX(last_modified)) FROM objects
             WHERE parent_id = :parent_id AND resource_name = 'record') AS newest;
    """
    in_flight = """
    SELECT as_epoch(MIN(xact_start)::TIMESTAMP) AS oldest
      FROM pg_stat_activity
     WHERE datname = current_database()
       AND backend_type = 'client backend'
       AND backend_xid IS NOT NULL;
    """
    with storage.client.connect(readonly=True) as conn:
        first = conn.execute(sa.text(newest), {"parent_id": collection_uri}).fetchone()
        oldest = conn.execute(sa.text(in_flight)).fetchone().oldest
    if oldest is not None:
        return min(oldest, first.started)
    return max(first.started, (first.newest or 0) + 1)


def check_storage_schema(event):
    """`postgresql_visible_before` reads Kinto's PostgreSQL schema, which is not a public API of Kinto: it is run
    once at start-up, so that a Kinto whose schema changed refuses to start instead of answering wrongly."""
    storage = event.app.registry.storage
    if type(storage).__module__ != "kinto.core.storage.postgresql":
        return
    try:
        postgresql_visible_before(storage, "/buckets/signer-schema-probe/collections/none")
    except Exception as e:  # noqa: BLE001 - any failure means the schema is not the one this plugin reads
        raise ConfigurationError(
            f"kinto_signer_webhook.push reads Kinto's PostgreSQL schema (table objects, function as_epoch, "
            f"pg_stat_activity) to answer signer-visible; it does not hold on this Kinto {kinto.__version__} "
            f"(run `kinto migrate` first, or use a kinto-signer-rs plugin made for this Kinto): {e}"
        ) from e


def parse_body(request):
    """`put` (records, each with a valid `id`, no `last_modified`) and `delete` (ids), each id at most once; and,
    for an atomic publication, `stamps_from` (the first write's timestamp, the next ones following in order),
    `if_match` (the records timestamp the writes apply to) and `metadata` (collection fields written with them)."""
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
    publication = None
    if "stamps_from" in body:
        publication = {k: body.get(k) for k in ("stamps_from", "if_match", "metadata")}
        for name in ("stamps_from", "if_match"):
            value = publication[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise_invalid(request, name=name, description=f"{name} must be a timestamp")
        if publication["stamps_from"] <= publication["if_match"]:
            raise_invalid(request, name="stamps_from", description="stamps_from must be after if_match")
        if not isinstance(publication["metadata"], dict):
            raise_invalid(request, name="metadata", description="metadata must be an object")
    return puts, deletes, publication


def includeme(config):
    # A read-only server takes no writes (Kinto refuses them before any view): nothing to announce.
    if asbool(config.get_settings().get("readonly", False)):
        return
    config.add_api_capability(
        CAPABILITY,
        description="Bulk writes of a collection's records in one transaction, and before when its writes are "
        "visible, for kinto-signer-rs.",
        visible_in_listings=True,
        atomic=True,
    )
    config.add_cornice_service(push)
    config.add_cornice_service(visible)
    config.add_subscriber(note_visible_before, ContextFound)
    # Not while `kinto migrate` runs: the tables may not exist yet.
    if "migrate" not in sys.argv:
        config.add_subscriber(check_storage_schema, ApplicationCreated)
    config.add_subscriber(add_visible_before, NewResponse)
