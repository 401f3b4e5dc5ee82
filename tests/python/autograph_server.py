"""An Autograph stand-in for the end-to-end tests (no real Autograph can be installed here).

It implements what the signer relies on, as Autograph documents and does it:
- POST /sign/data and /sign/hash: JSON array of {input, keyid}; Content-Type exactly `application/json`;
  Hawk with a payload hash, ±60 s skew, nonces refused on replay, host and port taken from the Host header
  (443 when it has no port); the Hawk user may only use its own key ids; answers 201 with
  {ref, type, mode, signer_id, public_key, signature, x5u}, signatures P-384 with random nonces (as Autograph).
- Errors as text/plain `<message>\\r\\nrequest-id: <id>`: 401 for authentication, 400 for bad requests.
- GET /__heartbeat__, /__lbheartbeat__, /__version__, /x5u/<keyid>/<file> (the certificate chains).
Test controls (not Autograph's): POST /__faults__ with a JSON list consumed one per sign request:
"503", "500", "429", "401", "garbage" (201 with a body that is not JSON), "hang:<seconds>"; GET /__stats__.

Usage: autograph_server.py PORT OUT_DIR SIGNER_NAME HAWK_ID HAWK_KEY KEYID [KEYID...]
Writes OUT_DIR/root.sha256 (hex SHA-256 of the root certificate) and the chains it serves.
"""

import base64
import datetime
import hashlib
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import mohawk
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_chain import cert, key, pem  # noqa: E402

PREFIX = b"Content-Signature:\x00"


class Signer:
    def __init__(self, keyid, signer_name, inter, inter_key, root, out, base_url):
        self.keyid = keyid
        self.key = key()
        ee = cert(signer_name, self.key.public_key(), "Test Intermediate", inter_key, ca=False, names=[signer_name])
        not_after = ee.not_valid_after_utc.strftime("%Y-%m-%d-%H-%M-%S")
        self.file = f"{signer_name}-{not_after}.chain"
        self.chain = pem(ee, inter, root)
        os.makedirs(os.path.join(out, keyid), exist_ok=True)
        with open(os.path.join(out, keyid, self.file), "wb") as f:
            f.write(self.chain)
        self.x5u = f"{base_url}/x5u/{keyid}/{self.file}"
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode()

    def sign_digest(self, digest):
        der = self.key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA384())))
        r, s = utils.decode_dss_signature(der)
        raw = r.to_bytes(48, "big") + s.to_bytes(48, "big")
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class State:
    def __init__(self, hawk_id, hawk_key, signers):
        self.credentials = {hawk_id: {"id": hawk_id, "key": hawk_key, "algorithm": "sha256"}}
        self.allowed = {hawk_id: [s.keyid for s in signers]}
        self.signers = {s.keyid: s for s in signers}
        self.nonces = {}
        self.faults = []
        self.stats = {"sign_requests": 0, "hash_requests": 0, "signed": 0, "refused": 0, "faults": 0}
        self.lock = threading.Lock()

    def seen_nonce(self, sender_id, nonce, timestamp):
        with self.lock:
            now = time.time()
            for k, at in list(self.nonces.items()):
                if now - at > 120:
                    del self.nonces[k]
            if (sender_id, nonce) in self.nonces:
                return True
            self.nonces[(sender_id, nonce)] = now
            return False

    def next_fault(self):
        with self.lock:
            self.stats["sign_requests"] += 1
            if self.faults:
                self.stats["faults"] += 1
                return self.faults.pop(0)
            return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None

    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, message):
        with self.state.lock:
            self.state.stats["refused"] += 1
        rid = str(uuid.uuid4())
        self.reply(status, f"{message}\r\nrequest-id: {rid}\n".encode(), "text/plain; charset=utf-8")

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length)

    def do_GET(self):
        if self.path in ("/__heartbeat__", "/__lbheartbeat__"):
            return self.reply(200, {})
        if self.path == "/__version__":
            return self.reply(200, {"source": "tests/python/autograph_server.py", "version": "test"})
        if self.path == "/__stats__":
            with self.state.lock:
                return self.reply(200, {**self.state.stats, "faults_left": list(self.state.faults)})
        parts = self.path.split("/")
        if len(parts) == 4 and parts[1] == "x5u" and parts[2] in self.state.signers:
            signer = self.state.signers[parts[2]]
            if parts[3] == signer.file:
                return self.reply(200, signer.chain, "application/x-pem-file")
        self.reply(404, b"404 page not found\n", "text/plain")

    def do_POST(self):
        body = self.body()
        if self.path == "/__faults__":
            with self.state.lock:
                self.state.faults.extend(json.loads(body))
            return self.reply(200, {"queued": len(self.state.faults)})
        if self.path not in ("/sign/data", "/sign/hash"):
            return self.error(404, "404 page not found")
        fault = self.state.next_fault()
        if fault is not None:
            if fault.startswith("hang:"):
                time.sleep(float(fault.split(":", 1)[1]))
            elif fault == "garbage":
                return self.reply(201, b"<html>proxy error</html>", "application/json")
            elif fault == "401":
                return self.error(401, "authorization verification failed: injected")
            else:
                return self.error(int(fault), f"injected {fault}")
        if self.headers.get("Content-Type") != "application/json":
            return self.error(400, "invalid content type, expected application/json")
        if len(body) < 10:
            return self.error(400, "missing request payload")
        user = self.authorize(body)
        if user is None:
            return
        try:
            requests = json.loads(body)
            assert isinstance(requests, list) and requests
        except Exception as e:  # noqa: BLE001 - any bad body is a 400, as in Autograph
            return self.error(400, f"failed to parse request body: {e}")
        answers = []
        for req in requests:
            keyid = req.get("keyid") or self.state.allowed[user][0]
            if keyid not in self.state.allowed[user]:
                return self.error(401, f"user {user!r} is not permitted to sign with signer {keyid!r}")
            try:
                data = base64.b64decode(req["input"], validate=True)
            except Exception:  # noqa: BLE001
                return self.error(400, "missing or invalid input")
            if self.path == "/sign/data":
                digest = hashlib.sha384(PREFIX + data).digest()
            elif len(data) in (32, 48, 64):
                digest = data
            else:
                return self.error(400, f"hash input of {len(data)} bytes")
            signer = self.state.signers[keyid]
            answers.append({
                "ref": uuid.uuid4().hex[:26],
                "type": "contentsignaturepki",
                "mode": "p384ecdsa",
                "signer_id": keyid,
                "public_key": signer.public_key,
                "signature": signer.sign_digest(digest),
                "x5u": signer.x5u,
            })
        with self.state.lock:
            self.state.stats["signed"] += len(answers)
            if self.path == "/sign/hash":
                self.state.stats["hash_requests"] += 1
        self.reply(201, answers)

    def authorize(self, body):
        header = self.headers.get("Authorization", "")
        if not header.startswith("Hawk ") or "hash=" not in header:
            self.error(401, "authorization verification failed: missing Hawk header or payload hash")
            return None
        host = self.headers.get("Host", "")
        name, _, port = host.partition(":")
        url = f"http://{name}:{port or 443}{self.path}"
        try:
            receiver = mohawk.Receiver(
                lambda sender_id: self.state.credentials[sender_id],
                header,
                url,
                "POST",
                content=body,
                content_type=self.headers.get("Content-Type"),
                seen_nonce=self.state.seen_nonce,
                timestamp_skew_in_seconds=60,
            )
        except (mohawk.exc.HawkFail, KeyError) as e:
            self.error(401, f"authorization verification failed: {type(e).__name__}: {e}")
            return None
        return receiver.parsed_header["id"]


def main(port, out, signer_name, hawk_id, hawk_key, *keyids):
    port = int(port)
    os.makedirs(out, exist_ok=True)
    root_key, inter_key = key(), key()
    root = cert("Test Root CA", root_key.public_key(), "Test Root CA", root_key, ca=True, days=(-1, 3650))
    inter = cert("Test Intermediate", inter_key.public_key(), "Test Root CA", root_key, ca=True, days=(-1, 365))
    base_url = f"http://127.0.0.1:{port}"
    signers = [Signer(k, signer_name, inter, inter_key, root, out, base_url) for k in keyids]
    with open(os.path.join(out, "root.sha256"), "w") as f:
        f.write(hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest())
    Handler.state = State(hawk_id, hawk_key, signers)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"autograph test server on {base_url} at {datetime.datetime.now().isoformat()}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) < 7:
        sys.exit(__doc__)
    main(*sys.argv[1:])
