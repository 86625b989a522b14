"""Measured energy beside the modelled figure: an agent (driven by hand over the protocol)
reports one task with the energy it measured on the task's devices and one without; the task
view labels each figure, `modelled` (the placement's TDP x PUE estimate, scaled to the reported
device-seconds) and `measured` (the agent's meters), and money is settled as before.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from suanli.cli_tasks import energy_line
from suanli.services.core import Role
from tests.integration.platform.conftest import Platform, submit_body


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_task_view_shows_measured_energy_beside_the_modelled_figure(
    platform: Platform,
) -> None:
    provider = platform.token(Role.PROVIDER, "provider")
    consumer = platform.token(Role.CONSUMER, "consumer")
    site = platform.site_with_pool(provider, count=2)
    with platform.client(consumer) as http:
        ids = []
        for name in ("measured", "modelled"):
            created = http.post(
                "/v1/tasks", json=submit_body("true", name=name, resources={"duration_s": 60})
            )
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
    with platform.client(provider) as agent:
        registered = agent.post(
            "/v1/agents", json={"site_id": site, "name": "by hand", "slots": 2, "backend": "local"}
        )
        assert registered.status_code == 201, registered.text
        me = registered.json()["id"]
        leased: list[str] = []
        for _ in range(20):  # long-polls until the pass has placed both
            answer = agent.post(f"/v1/agents/{me}/lease", json={"max": 2, "wait_s": 5})
            leased += [t["id"] for t in answer.json()["tasks"]]
            if len(leased) == 2:
                break
        assert sorted(leased) == sorted(ids)
        usages: list[dict[str, Any]] = [
            {
                "wall_s": 30.0,
                "cpu_s": 1.0,
                "device_s": 30.0,
                "energy_kwh": 0.0025,
                "utilisation": 0.8,
            },
            {"wall_s": 30.0, "cpu_s": 1.0, "device_s": 30.0},
        ]
        for task_id, usage in zip(ids, usages, strict=True):
            for body in (
                {"agent_id": me, "state": "RUNNING"},
                {"agent_id": me, "state": "COMPLETE", "exit_code": 0, "usage": usage},
            ):
                sent = agent.post(f"/v1/tasks/{task_id}/report", json=body)
                assert sent.status_code == 200, sent.text
    with platform.client(consumer) as http:
        measured, modelled = (http.get(f"/v1/tasks/{t}").json() for t in ids)

    assert [f["basis"] for f in measured["energy"]] == ["modelled", "measured"]
    model, meter = measured["energy"]
    placed = measured["placement"]
    assert placed["energy_kwh"] > 0 and placed["duration_s"] == 60
    # the placement's estimate for 60 s, scaled to the 30 device-seconds reported
    assert model["energy_kwh"] == pytest.approx(placed["energy_kwh"] * 30 / 60)
    assert model["scope"] == "facility"
    assert meter == {
        "basis": "measured",
        "energy_kwh": 0.0025,
        "scope": "devices",
        "utilisation": 0.8,
    }
    assert measured["usage"]["energy_kwh"] == 0.0025

    assert [f["basis"] for f in modelled["energy"]] == ["modelled"]
    assert "energy_kwh" not in modelled["usage"]  # nothing measured: nothing stored

    line = energy_line(measured)
    assert line is not None
    assert "kWh modelled 模型估算" in line and "0.0025 kWh measured 实测" in line
    assert "利用率 80%" in line
    only = energy_line(modelled)
    assert only is not None and "modelled 模型估算" in only and "measured" not in only

    # the console's task page labels them the same way
    with httpx.Client(base_url=platform.url, timeout=30) as browser:
        browser.get("/console/signin")
        signed = browser.post(
            "/console/signin",
            data={"token": consumer, "csrf": browser.cookies["suanli_csrf"], "next": ""},
            headers={"Origin": platform.url},
        )
        assert signed.status_code in (200, 303), signed.text
        browser.cookies.set("suanli_lang", "en")
        pages = [browser.get(f"/console/tasks/{t}") for t in ids]
    assert "Energy, modelled" in pages[0].text and "Energy, measured" in pages[0].text
    assert "0.0025 kWh · 80%" in pages[0].text
    assert "Energy, modelled" in pages[1].text and "Energy, measured" not in pages[1].text
