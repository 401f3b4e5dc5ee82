"""The listener's pure parts: the wait a request prefers, and the job states in the service's answer."""

from types import SimpleNamespace

from kinto_signer_webhook import MAX_WAIT_SECONDS, job_states, preferred_wait


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
