"""The listener: the wait a request prefers, the job states in the service's answer, and its sender thread in the
processes a pre-forking server makes."""

import json
import os
import queue
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

from kinto_signer_webhook import MAX_WAIT_SECONDS, Listener, job_states, preferred_wait


def request(prefer=None):
    return SimpleNamespace(headers={"Prefer": prefer} if prefer is not None else {})


def test_the_request_prefers_a_wait_or_the_setting_applies():
    assert preferred_wait(request("wait=5"), 0) == (5, True)
    assert preferred_wait(request("respond-async, Wait = 7"), 3) == (7, True)
    assert preferred_wait(request("wait=3600"), 0) == (MAX_WAIT_SECONDS, True)
    assert preferred_wait(request("wait=0"), 10) == (0, True)
    assert preferred_wait(request("wait=soon"), 10) == (10, False)
    assert preferred_wait(request("return=minimal"), 10) == (10, False)
    assert preferred_wait(request(), 4) == (4, False)


def test_job_states_from_one_job_or_several():
    assert job_states({"data": {"state": "succeeded"}, "coalesced": False}) == ["succeeded"]
    several = {"jobs": [{"data": {"state": "succeeded"}}, {"data": {"state": "running"}}], "ignored": []}
    assert job_states(several) == ["succeeded", "running"]
    assert job_states({"jobs": [], "ignored": [{"uri": None, "reason": "x"}]}) == []


def test_a_process_forked_after_loading_kinto_sends_through_a_sender_of_its_own():
    """gunicorn --preload loads Kinto (and this listener) in the master, then forks the workers that serve."""
    received = queue.Queue()

    class Webhook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    listener = Listener(url=f"http://127.0.0.1:{server.server_port}/", secret="", buckets=[], timeout=5)
    listener._enqueue(True, {"from": "master"})
    assert received.get(timeout=5) == {"from": "master"}

    worker = os.fork()
    if worker == 0:
        listener._enqueue(True, {"from": "worker"})
        time.sleep(30)
        os._exit(0)
    try:
        assert received.get(timeout=10) == {"from": "worker"}
    finally:
        os.kill(worker, signal.SIGKILL)
        os.waitpid(worker, 0)
        server.shutdown()
