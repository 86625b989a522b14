"""Attack: a task stole an agent's credential and used it beyond the agent's site.

The token an agent holds is a site-scoped agent token (`POST /v1/sites/{site}/agent-tokens`):
it registers, heartbeats, leases and reports for agents of that one site. Stolen, it must not
register an agent on another site, lease or report another site's tasks (a forged COMPLETE),
submit or list tasks, quote, list or create sites, mint tokens, use TES or sign in to the
console. On its own site a real `suanli agent` holding it runs a task to COMPLETE.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from suanli.services.core import Role
from tests.integration.platform.conftest import Platform, submit_body
from tests.waiting import poll

TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


def _until_placed(platform: Platform, token: str, task_id: str) -> dict[str, Any]:
    with platform.client(token) as http:

        def task() -> dict[str, Any]:
            return dict(http.get(f"/v1/tasks/{task_id}").json())

        def placed() -> dict[str, Any] | None:
            found = task()
            return found if found["pool"] is not None else None

        return poll(placed) or task()  # the caller judges an unplaced task


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 403, (response.request.url, response.text)
    error = response.json()["error"]
    assert "agent token" in error["message"] and "代理令牌" in error["message_zh"]


def test_stolen_agent_token_cannot_act_beyond_its_site(platform: Platform) -> None:
    provider = platform.token(Role.PROVIDER, "dc-1")
    consumer = platform.token(Role.CONSUMER, "lab")
    # site B first, with one device, and another consumer's task placed there
    site_b = platform.site_with_pool(provider, count=1, province="上海")
    with platform.client(consumer) as http:
        secret = {"API_KEY": "victim-secret"}
        body = submit_body("sh", "-c", "echo $API_KEY")
        body["executors"][0]["env"] = secret
        victim = http.post("/v1/tasks", json=body).json()["id"]
    placed = _until_placed(platform, consumer, victim)
    assert placed["site"] == site_b and placed["state"] == "QUEUED"
    site_a = platform.site_with_pool(provider, count=2, province="贵州")
    with platform.client(provider) as http:
        issued = http.post(f"/v1/sites/{site_a}/agent-tokens", json={"name": "rack 7"})
        assert issued.status_code == 201, issued.text
        stolen = issued.json()
        assert stolen["site_id"] == site_a and stolen["token"].startswith("sl_")
        # the provider's own token keeps working for agents: an agent on site B
        agent_b = http.post("/v1/agents", json={"site_id": site_b, "name": "b"}).json()["id"]

    with platform.client(stolen["token"]) as thief:
        # the agent protocol on another site of the same provider
        _refused(thief.post("/v1/agents", json={"site_id": site_b, "name": "rogue"}))
        _refused(thief.post(f"/v1/agents/{agent_b}/lease", json={"max": 5}))
        _refused(thief.post(f"/v1/agents/{agent_b}/heartbeat", json={"running": []}))
        forged = {"agent_id": agent_b, "state": "COMPLETE", "exit_code": 0}
        _refused(thief.post(f"/v1/tasks/{victim}/report", json=forged))
        # an agent it may register on its own site cannot touch site B's task either
        rogue = thief.post("/v1/agents", json={"site_id": site_a, "name": "rogue"})
        assert rogue.status_code == 201, rogue.text
        rogue_id = rogue.json()["id"]
        assert thief.post(f"/v1/agents/{rogue_id}/lease", json={"max": 5}).json()["tasks"] == []
        forged = {"agent_id": rogue_id, "state": "COMPLETE", "exit_code": 0}
        assert thief.post(f"/v1/tasks/{victim}/report", json=forged).status_code == 404
        # everything that is not the agent protocol
        _refused(thief.post("/v1/tasks", json=submit_body("true")))
        _refused(thief.get("/v1/tasks"))
        _refused(thief.get(f"/v1/tasks/{victim}"))
        _refused(thief.get(f"/v1/tasks/{victim}/logs"))
        _refused(thief.post(f"/v1/tasks/{victim}/cancel"))
        _refused(thief.post("/v1/quotes", json=submit_body("true")))
        _refused(thief.get("/v1/sites"))
        _refused(thief.post("/v1/sites", json={"name": "rogue", "province": "上海"}))
        _refused(thief.get("/v1/pools"))
        pool = {"site_id": site_a, "device": "cpu", "count": 64, "price_fen_per_device_hour": 1}
        _refused(thief.post("/v1/pools", json=pool))
        _refused(thief.get("/v1/balance"))
        _refused(thief.post(f"/v1/sites/{site_a}/agent-tokens", json={"name": "more"}))
        _refused(thief.get("/v1/tokens"))
        _refused(thief.get("/ga4gh/tes/v1/tasks"))
        tes = {"executors": [{"image": "alpine", "command": ["true"]}]}
        _refused(thief.post("/ga4gh/tes/v1/tasks", json=tes))
    # nor can it sign in to the console
    with httpx.Client(base_url=platform.url, timeout=30) as browser:
        form = browser.get("/console/signin")
        signin = browser.post(
            "/console/signin",
            data={"token": stolen["token"], **_csrf_field(browser, form)},
            headers={"Origin": platform.url},
        )
        assert signin.status_code in (401, 403), signin.text
        assert browser.get("/console/tasks").status_code in (303, 307, 401)  # not signed in

    with platform.client(consumer) as http:
        still = http.get(f"/v1/tasks/{victim}").json()
    assert (still["state"], still["exit_code"]) == ("QUEUED", None)  # nothing forged
    with platform.client(provider) as http:  # the provider's own token still works as an agent
        beat = http.post(f"/v1/agents/{agent_b}/heartbeat", json={"running": []})
        assert beat.status_code == 200, beat.text

    # on its own site the agent protocol works: a real agent holding the token runs a task
    platform.agent(stolen["token"], site_a)  # an agent token is passed as it is
    with platform.client(consumer) as http:
        created = http.post("/v1/tasks", json=submit_body("sh", "-c", "echo scoped"))
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
    task = platform.wait_for(consumer, task_id, TERMINAL, timeout=60)
    assert (task["state"], task["site"]) == ("COMPLETE", site_a), task
    with platform.client(consumer) as http:
        assert http.get(f"/v1/tasks/{task_id}/logs").json()["stdout_tail"].strip() == "scoped"


def _csrf_field(browser: httpx.Client, form: httpx.Response) -> dict[str, str]:
    """The sign-in form's CSRF field, if the console has one (a double-submit cookie)."""
    found = re.search(r'name="(csrf[^"]*)"\s+value="([^"]+)"', form.text)
    return {found.group(1): found.group(2)} if found else {}


def test_agent_token_issue_is_scoped_to_own_sites(platform: Platform, tmp_path: Path) -> None:
    """A provider cannot mint an agent token for someone else's site, nor a consumer at all."""
    mine = platform.token(Role.PROVIDER, "dc-1")
    theirs = platform.token(Role.PROVIDER, "dc-2")
    consumer = platform.token(Role.CONSUMER, "lab")
    their_site = platform.site_with_pool(theirs)
    with platform.client(mine) as http:
        assert http.post(f"/v1/sites/{their_site}/agent-tokens", json={}).status_code == 404
    with platform.client(consumer) as http:
        assert http.post(f"/v1/sites/{their_site}/agent-tokens", json={}).status_code == 403
    with platform.client(theirs) as http:
        issued = http.post(
            f"/v1/sites/{their_site}/agent-tokens", json={"name": "n", "expires_in_s": 3600}
        )
        assert issued.status_code == 201, issued.text
        listed = {t["id"]: t for t in http.get("/v1/tokens").json()}
    row = listed[issued.json()["id"]]
    assert row["site_id"] == their_site and row["expires_at"] is not None
    assert "token" not in row  # a secret is shown once, never listed


def test_hostile_agent_token_requests_are_refused_by_name(platform: Platform) -> None:
    """The token routes take hostile input like every other: a NUL in the name (a 500 on
    PostgreSQL if it reached the database), expiries that are not a positive number of seconds,
    unknown keys, a NUL in a path id; each a 4xx naming the field, and no token is made."""
    provider = platform.token(Role.PROVIDER, "dc-1")
    site = platform.site_with_pool(provider)
    with platform.client(provider) as http:
        before = http.get("/v1/tokens").json()
        for body, field in (
            ({"name": "rack\x00a"}, "name"),
            ({"name": ""}, "name"),
            ({"expires_in_s": -1}, "expires_in_s"),
            ({"expires_in_s": 10**30}, "expires_in_s"),
            ({"expires_in_s": "3600"}, "expires_in_s"),
            ({"expires_in_s": 1.5}, "expires_in_s"),
            ({"scope": "everything"}, "scope"),
        ):
            refused = http.post(f"/v1/sites/{site}/agent-tokens", json=body)
            assert refused.status_code == 422, (body, refused.text)
            assert field in str(refused.json()["error"]["field"]), (body, refused.text)
        assert http.post("/v1/tokens/tok-%00x/revoke").status_code in (400, 404, 422)
        assert http.get("/v1/tokens").json() == before
