#!/usr/bin/env python3
"""Real clients from PyPI for the authentication tests (tests/tests/e2e/auth.rs).

Each subcommand either makes credentials (keys, tokens, certificates) or sends one scheme's cases to a running
signer-api with the library its users would use, and prints one JSON object: case name -> what happened.
"""

import argparse
import base64
import datetime
import email.utils
import hashlib
import hmac
import http.client
import json
import os
import socket
import ssl
import sys
import time
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

# The project's certificate-policy arc (api/src/auth/mtls.rs: SCOPE_ARC); .1 is `sign`, .5 is `read`.
SCOPE_ARC = "2.25.299098378072782518953507022030798441136"
JOB = {"resource": "ws/cfr"}


def emit(value):
    json.dump(value, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


def answer(response):
    """Status, JSON body and challenge of a requests response."""
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return {"status": response.status_code, "body": body, "www_authenticate": response.headers.get("WWW-Authenticate")}


def pem_private(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def pem_public(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


# --- JWT (pyjwt) -------------------------------------------------------------------------------------------


def jwt_tokens(args):
    import jwt
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = pem_public(key)
    write(os.path.join(args.dir, "jwt-public.pem"), public_pem)
    idp_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(idp_key.public_key()))
    jwk.update({"kid": "k1", "alg": "RS256", "use": "sig"})
    write(os.path.join(args.dir, "jwks.json"), json.dumps({"keys": [jwk]}).encode())

    now = int(time.time())
    base = {"sub": "ci-bot", "aud": "kinto-signer", "iat": now, "exp": now + 300}

    def rs256(claims, signer=key, **headers):
        return jwt.encode(claims, signer, algorithm="RS256", headers=headers or None)

    def without(name):
        return {k: v for k, v in base.items() if k != name}

    # HS256 "signed" with the RSA public key as the secret: the algorithm-confusion attack. PyJWT itself refuses
    # to make one, so it is put together by hand.
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(base).encode())
    confused = signing_input + "." + b64(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())

    emit(
        {
            "valid": rs256(base),
            "expired_within_leeway": rs256({**base, "exp": now - 10}),
            "expired": rs256({**base, "exp": now - 120}),
            "not_yet_valid": rs256({**base, "nbf": now + 300}),
            "issued_in_the_future": rs256({**base, "iat": now + 300}),
            "wrong_audience": rs256({**base, "aud": "another-service"}),
            "no_audience": rs256(without("aud")),
            "no_sub": rs256(without("sub")),
            "alg_none": jwt.encode(base, None, algorithm="none"),
            "hs256_with_the_public_key": confused,
            "other_key": rs256(base, rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            "jwks_k1": rs256(base, idp_key, kid="k1"),
            "jwks_unknown_kid": rs256(base, idp_key, kid="k9"),
        }
    )


# --- Cavage (httpsig, and Flask-Cavage-style requests) -----------------------------------------------------


def cavage(args):
    import requests
    from httpsig.requests_auth import HTTPSignatureAuth
    from httpsig.sign import HeaderSigner

    url = args.url
    secret = args.secret.encode()
    with open(args.rsa_key, "rb") as f:
        rsa_pem = f.read()
    body = json.dumps(JOB)

    def date(offset=0):
        return email.utils.formatdate(time.time() + offset, usegmt=True)

    def digest(data):
        return "SHA-256=" + base64.b64encode(hashlib.sha256(data.encode()).digest()).decode()

    post_headers = ["(request-target)", "host", "date", "digest", "content-length", "content-type"]

    def post(key_id="svc-a", key=secret, algorithm="hmac-sha256", signed=post_headers, send_body=body, path="/v1/jobs", offset=0):
        headers = {"Date": date(offset), "Digest": digest(body), "Content-Type": "application/json"}
        auth = HTTPSignatureAuth(key_id=key_id, secret=key, algorithm=algorithm, headers=signed)
        return answer(requests.post(url + path, data=send_body, headers=headers, auth=auth))

    def get(path="/v1/jobs?resource=ws/cfr", **kwargs):
        auth = HTTPSignatureAuth(key_id="svc-a", secret=secret, algorithm="hmac-sha256", headers=["(request-target)", "host", "date"])
        return answer(requests.get(url + path, headers={"Date": date(**kwargs)}, auth=auth))

    def prepared(headers_to_sign, **edits):
        """A POST signed by hand with HeaderSigner, then changed as `edits` say (a Flask-Cavage-style client)."""
        headers = {"Date": date(), "Digest": digest(body), "Content-Type": "application/json", "Content-Length": str(len(body))}
        host = url.split("://", 1)[1]
        signer = HeaderSigner(key_id="svc-a", secret=secret, algorithm="hmac-sha256", headers=headers_to_sign, sign_header=edits.get("carrier", "authorization"))
        signed = signer.sign(dict(headers), host=host, method="POST", path="/v1/jobs")
        if edits.get("drop_algorithm"):
            for name in ("authorization", "Authorization"):
                if name in signed:
                    signed[name] = ",".join(p for p in signed[name].split(",") if not p.startswith("algorithm="))
        return answer(requests.post(url + "/v1/jobs", data=body, headers=signed))

    emit(
        {
            "get": get(),
            "post": post(),
            "post_rsa": post(key_id="svc-rsa", key=rsa_pem, algorithm="rsa-sha256"),
            "post_with_query": post(path="/v1/jobs?source=ci"),
            "signature_header": prepared(post_headers, carrier="signature"),
            "no_algorithm_parameter": prepared(post_headers, drop_algorithm=True),
            # Same length, so only the digest can tell (content-length is signed too).
            "tampered_body": post(send_body=json.dumps({"resource": "ws/cfX"})),
            "stale_date": post(offset=-3600),
            "future_date": get(offset=3600),
            "digest_not_covered": post(signed=["(request-target)", "host", "date"]),
            "date_not_covered": post(signed=["(request-target)", "host", "digest"]),
            "unknown_key": post(key_id="svc-b"),
            "wrong_secret": post(key=b"not-the-secret"),
            "wrong_algorithm": post(key_id="svc-rsa", key=secret, algorithm="hmac-sha256"),
        }
    )


# --- RFC 9421 (http-message-signatures, requests-http-signature) -------------------------------------------

ALGORITHMS = {
    "hmac": "hmac-sha256",
    "p256": "ecdsa-p256-sha256",
    "p384": "ecdsa-p384-sha384",
    "ed25519": "ed25519",
    "pss": "rsa-pss-sha512",
    "v15": "rsa-v1_5-sha256",
}


def rfc9421_keys(args):
    keys = {}
    for key_id, algorithm in ALGORITHMS.items():
        if key_id == "hmac":
            secret = os.urandom(32)
            write(os.path.join(args.dir, "hmac.secret"), secret)
            keys[key_id] = {"algorithm": algorithm, "secret_base64": base64.b64encode(secret).decode()}
            continue
        private = {
            "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
            "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
            "ed25519": ed25519.Ed25519PrivateKey.generate,
            "pss": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "v15": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        }[key_id]()
        write(os.path.join(args.dir, key_id + ".key"), pem_private(private))
        public = write(os.path.join(args.dir, key_id + ".pub"), pem_public(private))
        keys[key_id] = {"algorithm": algorithm, "public_key_file": public}
    emit(keys)


def rfc9421(args):
    import requests
    import http_message_signatures as hms
    from http_message_signatures import algorithms as hms_algorithms
    from requests_http_signature import HTTPSignatureAuth, algorithms as rhs_algorithms

    classes = {
        "hmac": "HMAC_SHA256",
        "p256": "ECDSA_P256_SHA256",
        "p384": "ECDSA_P384_SHA384",
        "ed25519": "ED25519",
        "pss": "RSA_PSS_SHA512",
        "v15": "RSA_V1_5_SHA256",
    }

    def key(key_id):
        name = "hmac.secret" if key_id == "hmac" else key_id + ".key"
        with open(os.path.join(args.dir, name), "rb") as f:
            return f.read()

    def signer(key_id):
        resolver = hms.MappingKeyResolver(private_keys={key_id: key(key_id)}, public_keys={})
        return hms.HTTPMessageSigner(signature_algorithm=getattr(hms_algorithms, classes[key_id]), key_resolver=resolver)

    session = requests.Session()
    covered = ("@method", "@authority", "@path", "@query")

    def signed(key_id="ed25519", method="POST", path="/v1/jobs", body=json.dumps(JOB), components=covered, digest=True, **params):
        request = requests.Request(method, args.url + path, data=body, headers={"Content-Type": "application/json"} if body else {}).prepare()
        signer(key_id).sign(
            request,
            key_id=key_id,
            covered_component_ids=components,
            body=body.encode() if (body and digest) else None,
            **params,
        )
        return request

    def send(request):
        return answer(session.send(request))

    results = {}
    for key_id in ALGORITHMS:
        results["post_" + key_id] = send(signed(key_id))
        # requests-http-signature's defaults: @method @authority @target-uri, and content-digest for the body.
        auth = HTTPSignatureAuth(signature_algorithm=getattr(rhs_algorithms, classes[key_id]), key=key(key_id), key_id=key_id)
        results["requests_http_signature_" + key_id] = answer(requests.post(args.url + "/v1/jobs", json=JOB, auth=auth))

    get = signed(method="GET", path="/v1/jobs?state=queued", body=None)
    get.url = get.url.replace("state=queued", "state=failed")
    results["tampered_query"] = send(get)
    tampered = signed()
    tampered.body = json.dumps({"resource": "ws/cfX"}).encode()
    tampered.headers["Content-Length"] = str(len(tampered.body))
    results["tampered_body"] = send(tampered)
    results["digest_not_covered"] = send(signed(digest=False))
    now = datetime.datetime.now(datetime.timezone.utc)
    results["expired"] = send(signed(created=now - datetime.timedelta(hours=1)))
    results["expires_passed"] = send(signed(created=now - datetime.timedelta(seconds=100), expires=now - datetime.timedelta(seconds=60)))
    results["created_in_the_future"] = send(signed(created=now + datetime.timedelta(hours=1)))
    results["missing_required_component"] = send(signed(components=("@method", "@authority")))
    once = signed(nonce=uuid.uuid4().hex)
    results["nonce_first_use"] = send(once)
    results["nonce_replayed"] = send(once)
    emit(results)


# --- mTLS (certificates made with cryptography; Python's ssl as the client) --------------------------------


def name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "signer tests"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def certificate(subject_key, subject, issuer_key, issuer, *, ca=False, days=(-1, 30), san=None, policies=None, critical_policies=False, server=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days[0]))
        .not_valid_after(now + datetime.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        usage = x509.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if policies:
        info = [x509.PolicyInformation(x509.ObjectIdentifier(oid), None) for oid in policies]
        builder = builder.add_extension(x509.CertificatePolicies(info), critical=critical_policies)
    algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(issuer_key, algorithm)


def mtls_pki(args):
    d = args.dir
    os.makedirs(os.path.join(d, "known_clients"), exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate(ca_key, name("signer test clients"), ca_key, name("signer test clients"), ca=True)
    write(os.path.join(d, "known_clients", "clients-ca.crt"), ca.public_bytes(serialization.Encoding.PEM))
    # A README beside the CAs is not a certificate: the directory may hold other files.
    write(os.path.join(d, "known_clients", "README"), b"trusted client CAs\n")
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = certificate(rogue_key, name("someone else"), rogue_key, name("someone else"), ca=True)

    server_ca_key = ec.generate_private_key(ec.SECP256R1())
    server_ca = certificate(server_ca_key, name("signer test servers"), server_ca_key, name("signer test servers"), ca=True)
    write(os.path.join(d, "server-ca.crt"), server_ca.public_bytes(serialization.Encoding.PEM))
    server_key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    server = certificate(server_key, name("127.0.0.1"), server_ca_key, server_ca.subject, san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], server=True)
    write(os.path.join(d, "server.crt"), server.public_bytes(serialization.Encoding.PEM))
    write(os.path.join(d, "server.key"), pem_private(server_key))

    sign, read = SCOPE_ARC + ".1", SCOPE_ARC + ".5"
    clients = {
        "scoped": dict(san=[x509.DNSName("ci.example")], policies=[sign, read, "2.23.140.1.2.1"]),
        "unscoped": dict(),
        "ed25519": dict(key=ed25519.Ed25519PrivateKey.generate(), san=[x509.DNSName("ed.example")], policies=[sign]),
        "expired": dict(san=[x509.DNSName("old.example")], policies=[sign], days=(-30, -1)),
        "critical_policies": dict(san=[x509.DNSName("strict.example")], policies=[sign], critical_policies=True),
        "untrusted": dict(san=[x509.DNSName("ci.example")], policies=[sign], issuer=(rogue_key, rogue)),
    }
    for client, spec in clients.items():
        key = spec.pop("key", None) or ec.generate_private_key(ec.SECP256R1())
        issuer_key, issuer = spec.pop("issuer", (ca_key, ca))
        # Only the unscoped certificate lacks a subjectAltName: its common name must name the caller.
        cert = certificate(key, name("release-bot" if client == "unscoped" else client + "-cn"), issuer_key, issuer.subject, **spec)
        write(os.path.join(d, client + ".crt"), cert.public_bytes(serialization.Encoding.PEM))
        write(os.path.join(d, client + ".key"), pem_private(key))
    emit({"clients": sorted(clients)})


def mtls(args):
    d = args.dir
    host, port = args.url.split("://", 1)[1].rsplit(":", 1)
    results = {}
    for client in ["none"] + args.clients:
        context = ssl.create_default_context(cafile=os.path.join(d, "server-ca.crt"))
        if client != "none":
            context.load_cert_chain(os.path.join(d, client + ".crt"), os.path.join(d, client + ".key"))
        try:
            connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
            connection.request("POST", "/v1/jobs", body=json.dumps(JOB), headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            results[client] = {"status": response.status, "body": json.loads(response.read() or b"null")}
        except (ssl.SSLError, ConnectionError, socket.error) as e:
            results[client] = {"error": type(e).__name__ + ": " + str(e)}
    # The refusals as the server counted them, read with a good certificate.
    context = ssl.create_default_context(cafile=os.path.join(d, "server-ca.crt"))
    context.load_cert_chain(os.path.join(d, "scoped.crt"), os.path.join(d, "scoped.key"))
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    connection.request("GET", "/metrics")
    results["metrics"] = connection.getresponse().read().decode()
    emit(results)


# --- kmsauth (tokens made by kmsauth's own generator, KMS played by moto) ---------------------------------


def kmsauth_tokens(args):
    import logging

    import boto3
    import kmsauth

    # The validator logs every refusal with a traceback; its verdicts are in the output.
    logging.disable(logging.CRITICAL)

    region = "us-east-1"
    kms = boto3.client("kms", region_name=region, endpoint_url=args.kms)
    aliases = {}
    for alias in ("signer-auth", "signer-user", "signer-scoped", "someone-else"):
        key_id = kms.create_key(Description=alias)["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName="alias/" + alias, TargetKeyId=key_id)
        aliases[alias] = "alias/" + alias

    def generated(alias, sender, to="kinto-signer", user_type="service", version=2):
        # The generator encrypts under its context verbatim: a version-1 token's has no user_type.
        context = {"to": to, "from": sender} if version == 1 else {"to": to, "from": sender, "user_type": user_type}
        generator = kmsauth.KMSTokenGenerator(aliases[alias], context, region, token_version=version, token_cache_file="", endpoint_url=args.kms)
        token = generator.get_token()
        return {"username": generator.get_username(), "token": token.decode() if isinstance(token, bytes) else token}

    def by_hand(alias, sender, not_before, not_after):
        """A token with a chosen window, encrypted the way the generator does."""
        stamp = "%Y%m%dT%H%M%SZ"
        now = datetime.datetime.now(datetime.timezone.utc)
        plaintext = json.dumps({"not_before": (now + not_before).strftime(stamp), "not_after": (now + not_after).strftime(stamp)})
        context = {"to": "kinto-signer", "from": sender, "user_type": "service"}
        blob = kms.encrypt(KeyId=aliases[alias], Plaintext=plaintext, EncryptionContext=context)["CiphertextBlob"]
        return {"username": "2/service/" + sender, "token": base64.b64encode(blob).decode()}

    minutes = lambda n: datetime.timedelta(minutes=n)
    cases = {
        "v1": generated("signer-auth", "ci-bot", version=1),
        "v2_service": generated("signer-auth", "ci-bot"),
        "v2_user": generated("signer-user", "alice", user_type="user"),
        "scoped_key": generated("signer-scoped", "deployer"),
        "wrong_to": generated("signer-auth", "ci-bot", to="another-service"),
        "user_token_on_a_service_key": generated("signer-auth", "alice", user_type="user"),
        "key_not_allowed": generated("someone-else", "ci-bot"),
        "expired": by_hand("signer-auth", "ci-bot", minutes(-20), minutes(-10)),
        "not_yet_valid": by_hand("signer-auth", "ci-bot", minutes(10), minutes(20)),
        "multi_day": by_hand("signer-auth", "ci-bot", minutes(-3), datetime.timedelta(days=1, minutes=5)),
    }
    tampered = dict(cases["v2_service"])
    raw = bytearray(base64.b64decode(tampered["token"]))
    raw[len(raw) // 2] ^= 0x01
    tampered["token"] = base64.b64encode(bytes(raw)).decode()
    cases["tampered"] = tampered
    cases["from_mismatch"] = {"username": "2/service/someone", "token": cases["v2_service"]["token"]}

    # The Python validator's verdict on every case, to compare with ours.
    validator = kmsauth.KMSTokenValidator(
        [aliases["signer-auth"]],
        [aliases["signer-user"]],
        "kinto-signer",
        region,
        scoped_auth_keys={aliases["signer-scoped"]: "deploy"},
        endpoint_url=args.kms,
    )
    for case in cases.values():
        try:
            validator.decrypt_token(case["username"], case["token"])
            case["python"] = "valid"
        except kmsauth.TokenValidationError as e:
            case["python"] = "refused: " + str(e)
    emit({"aliases": aliases, "cases": cases})


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("jwt-tokens")
    p.add_argument("dir")
    p.set_defaults(run=jwt_tokens)
    p = sub.add_parser("cavage")
    p.add_argument("url")
    p.add_argument("secret")
    p.add_argument("rsa_key")
    p.set_defaults(run=cavage)
    p = sub.add_parser("rfc9421-keys")
    p.add_argument("dir")
    p.set_defaults(run=rfc9421_keys)
    p = sub.add_parser("rfc9421")
    p.add_argument("url")
    p.add_argument("dir")
    p.set_defaults(run=rfc9421)
    p = sub.add_parser("mtls-pki")
    p.add_argument("dir")
    p.set_defaults(run=mtls_pki)
    p = sub.add_parser("mtls")
    p.add_argument("url")
    p.add_argument("dir")
    p.add_argument("clients", nargs="+")
    p.set_defaults(run=mtls)
    p = sub.add_parser("kmsauth-tokens")
    p.add_argument("kms")
    p.set_defaults(run=kmsauth_tokens)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
