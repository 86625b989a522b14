"""One validation path for all input. Each test is an attack that used to be accepted (and so
stopped scheduling, or was stored and served back) or answered 500, sent to a real server over
SQLite and PostgreSQL: now each is a 4xx that names the field and what it would accept, in
English and Chinese, nothing is stored, and no answer is a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from suanli.services.core import Role
from tests.integration.platform.conftest import Platform, submit_body

TES = "/ga4gh/tes/v1"
MIB = 1024 * 1024
PRICE_BOUND = 10_000_000  # specs.MAX_PRICE_FEN_PER_DEVICE_HOUR: 100,000 yuan


def _refused(response: httpx.Response, field: str | None = None) -> dict[str, Any]:
    """A 4xx naming the field, in both languages; the error body."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    error: dict[str, Any] = response.json()["error"]
    assert error["message"] and error["message_zh"], error
    if field is not None:
        assert error["field"] == field, error
    return error


def _listed(http: httpx.Client) -> tuple[int, int, int, int]:
    """How many tasks (native and TES), sites and pools this client sees."""
    tasks = http.get("/v1/tasks", params={"limit": 1000})
    tes = http.get(f"{TES}/tasks", params={"page_size": 2048})
    sites, pools = http.get("/v1/sites"), http.get("/v1/pools")
    for answer in (tasks, tes, sites, pools):
        assert answer.status_code == 200, answer.text
    return len(tasks.json()), len(tes.json()["tasks"]), len(sites.json()), len(pools.json())


def _tes_task(**parameters: str) -> dict[str, Any]:
    return {
        "executors": [{"image": "x", "command": ["true"]}],
        "resources": {"backend_parameters": parameters},
    }


def test_bad_backend_parameters_are_refused(platform: Platform) -> None:
    consumer = platform.token(Role.CONSUMER, "lab")
    with platform.client(consumer) as http:
        for key, value in (
            ("devices", "-5"),
            ("devices", "0"),
            ("devices", "100001"),
            ("devices", "2.5"),
            ("work_flop", "nan"),
            ("work_flop", "inf"),
            ("work_flop", "-inf"),
            ("work_flop", "1e400"),
            ("work_flop", "-1"),
            ("latency_tier", "bogus"),
            ("precision", "x"),
            ("policy", "steal"),
            ("device_kind", "tpu"),
            ("deadline_s", "-1"),
            ("deadline_s", "NaN"),
            ("max_price_fen", "1e3"),
            ("max_price_fen", "-1"),
            ("max_price_fen", "9" * 30),
        ):
            answer = http.post(f"{TES}/tasks", json=_tes_task(**{key: value}))
            assert answer.status_code == 400, (key, value, answer.text)
            _refused(answer, f"resources.backend_parameters.{key}")
        # the same bounds as the native API: the largest accepted values are accepted
        fine = http.post(f"{TES}/tasks", json=_tes_task(devices="4", work_flop="1e18"))
        assert fine.status_code == 200, fine.text
        assert _listed(http)[:2] == (1, 1)  # nothing else was stored


def test_nul_bytes_are_refused(platform: Platform) -> None:
    consumer = platform.token(Role.CONSUMER, "lab")
    provider = platform.token(Role.PROVIDER, "dc")
    site = platform.site_with_pool(provider)
    with platform.client(consumer) as http, platform.client(provider) as owner:
        http.post("/v1/tasks", json=submit_body("true", name="kept")).raise_for_status()
        before = _listed(http), _listed(owner)[2:]  # the provider's tasks: placed, not sent
        for body, field in (
            (submit_body("true", name="a\x00b"), "body.name"),
            (submit_body("a\x00b"), "body.executors.0.command.0"),
            ({"executors": [{"command": ["true"], "env": {"K": "v\x00"}}]}, None),
            ({"executors": [{"command": ["true"], "env": {"K\x00": "v"}}]}, None),
            (submit_body("true", tags={"k": "\x00"}), None),
            (submit_body("true", tags={"\x00": "v"}), None),
            (submit_body("true", origin="上\x00海"), "body.origin"),
            (submit_body("true", zones=["YRD\x00"]), "body.zones.0"),
            ({"executors": [{"command": ["true"], "workdir": "/w\x00"}]}, None),
        ):
            _refused(http.post("/v1/tasks", json=body), field)
            _refused(http.post("/v1/quotes", json=body), field)
        for document in (
            {"name": "a\x00", "executors": [{"image": "x", "command": ["true"]}]},
            {"description": "\x00", "executors": [{"image": "x", "command": ["true"]}]},
            {"executors": [{"image": "x\x00", "command": ["true"]}]},
            {"executors": [{"image": "x", "command": ["true"]}], "tags": {"k\x00": "v"}},
            {"executors": [{"image": "x", "command": ["true"], "env": {"A": "\x00"}}]},
        ):
            assert http.post(f"{TES}/tasks", json=document).status_code == 400, document
        for path, params in (
            ("/v1/tasks", {"state": "QUEUED\x00"}),
            (f"{TES}/tasks", {"name_prefix": "k\x00"}),
            (f"{TES}/tasks", {"state": "\x00"}),
            (f"{TES}/tasks", {"tag_key": "\x00"}),
            (f"{TES}/tasks", {"page_token": "\x00"}),
            ("/v1/statement", {"account": "wallet:\x00"}),
        ):
            _refused(http.get(path, params=params), "query")
        for path in ("/v1/tasks/task-%00", f"{TES}/tasks/task-%00", "/v1/orders/%00"):
            _refused(http.get(path), "path")
        _refused(http.post("/v1/tasks/%00/cancel"), "path")
        _refused(owner.post("/v1/sites", json={"name": "x\x00", "province": "上海"}), "body.name")
        _refused(owner.post("/v1/sites", json={"name": "x", "province": "上\x00"}))
        pool = {"site_id": site, "device": "cpu\x00", "count": 1, "price_fen_per_device_hour": 1}
        _refused(owner.post("/v1/pools", json=pool), "body.device")
        _refused(owner.post("/v1/pools", json={**pool, "device": "cpu", "site_id": "s\x00"}))
        _refused(owner.post("/v1/agents", json={"site_id": site, "name": "a\x00"}), "body.name")
        assert (_listed(http), _listed(owner)[2:]) == before


def test_task_printing_nul_is_reported(platform: Platform) -> None:
    """A task's own output may hold a NUL: the agent's report replaces it, not refused."""
    provider = platform.token(Role.PROVIDER, "dc")
    site = platform.site_with_pool(provider)
    platform.agent(provider, site, 1)
    consumer = platform.token(Role.CONSUMER, "lab")
    with platform.client(consumer) as http:
        task_id = http.post("/v1/tasks", json=submit_body("printf", "a\\000b")).json()["id"]
    task = platform.wait_for(consumer, task_id, {"COMPLETE", "SYSTEM_ERROR"}, timeout=60)
    assert task["state"] == "COMPLETE", task
    with platform.client(consumer) as http:
        assert http.get(f"/v1/tasks/{task_id}/logs").json()["stdout_tail"] == "a\ufffdb"


def test_huge_page_token_is_refused(platform: Platform) -> None:
    consumer = platform.token(Role.CONSUMER, "lab")
    with platform.client(consumer) as http:
        for _ in range(3):
            assert http.post(f"{TES}/tasks", json=_tes_task()).status_code == 200
        for token in ("9" * 20, "1" * 40, "-1", "2", "abc", "b185", "bzk5OTk5OTk5OTk5", "o1"):
            answer = http.get(f"{TES}/tasks", params={"page_token": token})
            assert answer.status_code == 400, (token, answer.text)
            _refused(answer, "page_token")
        first = http.get(f"{TES}/tasks", params={"page_size": 2}).json()
        second = http.get(
            f"{TES}/tasks", params={"page_size": 2, "page_token": first["next_page_token"]}
        ).json()
        assert len(first["tasks"]) == 2 and len(second["tasks"]) == 1
        assert "next_page_token" not in second
        for limit in (0, 1001, 10**20):
            _refused(http.get("/v1/tasks", params={"limit": limit}), "query.limit")
        _refused(http.get(f"{TES}/tasks", params={"page_size": 10**20}), "query.page_size")


def _raw(http: httpx.Client, path: str, text: str) -> httpx.Response:
    return http.post(path, content=text.encode(), headers={"Content-Type": "application/json"})


def test_huge_numbers_are_refused(platform: Platform) -> None:
    consumer = platform.token(Role.CONSUMER, "lab")
    provider = platform.token(Role.PROVIDER, "dc")
    site = platform.site_with_pool(provider)
    with platform.client(consumer) as http, platform.client(provider) as owner:
        before = _listed(http), _listed(owner)
        pool = {"site_id": site, "device": "cpu", "count": 1}
        for price in (3_000_000_000, PRICE_BOUND + 1, 10**30):
            answer = owner.post("/v1/pools", json={**pool, "price_fen_per_device_hour": price})
            _refused(answer, "body.price_fen_per_device_hour")
        for count in (2**31, 10**30):
            answer = owner.post(
                "/v1/pools", json={**pool, "count": count, "price_fen_per_device_hour": 1}
            )
            _refused(answer, "body.count")
        huge = "1" + "0" * 400
        for text, field in (
            ('{"executors":[{"command":["true"]}],"resources":{"work_flop":NaN}}', None),
            ('{"executors":[{"command":["true"]}],"resources":{"work_flop":Infinity}}', None),
            ('{"executors":[{"command":["true"]}],"resources":{"memory_gb":-Infinity}}', None),
            ('{"executors":[{"command":["true"]}],"data_gb":1e400}', None),
            ('{"executors":[{"command":["true"]}],"resources":{"work_flop":1e300}}', None),
            ('{"executors":[{"command":["true"]}],"resources":{"duration_s":1e300}}', None),
            ('{"executors":[{"command":["true"]}],"deadline_s":1e300}', None),
            ('{"executors":[{"command":["true"]}],"max_price_fen":' + huge + "}", None),
            ('{"executors":[{"command":["true"]}],"resources":{"devices":2147483648}}', None),
        ):
            _refused(_raw(http, "/v1/tasks", text), field)
            _refused(_raw(http, "/v1/quotes", text), field)
        for text in (
            '{"executors":[{"image":"x","command":["true"]}],"resources":{"ram_gb":NaN}}',
            '{"executors":[{"image":"x","command":["true"]}],"description":"d","x":Infinity}',
            '{"executors":[{"image":"x","command":["true"]}],"resources":{"cpu_cores":'
            + huge
            + "}}",
        ):
            assert _raw(http, f"{TES}/tasks", text).status_code == 400, text
        site_body = '{"name":"s","province":"上海","lat":NaN}'
        _refused(_raw(owner, "/v1/sites", site_body), "body.lat")
        assert (_listed(http), _listed(owner)) == before
        bound = owner.post("/v1/pools", json={**pool, "price_fen_per_device_hour": PRICE_BOUND})
        assert bound.status_code == 201, bound.text


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        part = b" " * min(size, total - sent)
        sent += len(part)
        yield part


def test_body_over_limit_is_413(platform: Platform) -> None:
    consumer = platform.token(Role.CONSUMER, "lab")
    with platform.client(consumer) as http:
        before = _listed(http)
        padded = json.dumps(submit_body("true", name="big")) + " " * MIB  # over 1 MiB in all
        declared = _raw(http, "/v1/tasks", padded)  # with a Content-Length
        assert declared.status_code == 413, declared.text
        error = _refused(declared, "body")
        assert error["code"] == "body_too_large" and error["limit_bytes"] == MIB
        assert "SUANLI_MAX_BODY_BYTES" in error["message"]
        streamed = http.post(  # chunked: no Content-Length, counted as it arrives
            "/v1/tasks",
            content=_chunks(MIB + 64 * 1024),
            headers={"Content-Type": "application/json"},
        )
        assert "content-length" not in streamed.request.headers
        assert streamed.status_code == 413, streamed.text
        assert streamed.json()["error"]["code"] == "body_too_large"
        tes = {
            "executors": [{"image": "x", "command": ["cat", "/in"]}],
            "inputs": [{"path": "/in", "content": "x" * (MIB + 1)}],
        }
        assert http.post(f"{TES}/tasks", json=tes).status_code == 413
        assert _listed(http) == before
        # just under the limit is accepted
        tes["inputs"] = [{"path": "/in", "content": "x" * 900_000}]
        assert http.post(f"{TES}/tasks", json=tes).status_code == 200
    platform.stop()  # the limit is a setting
    platform.env["SUANLI_MAX_BODY_BYTES"] = "4096"
    platform.start()
    with platform.client(consumer) as http:
        small = http.post("/v1/tasks", json=submit_body("true", name="x" * 100))
        assert small.status_code == 201, small.text
        large = http.post("/v1/tasks", json=submit_body("true", tags={"k": "v" * 4096}))
        assert large.status_code == 413 and large.json()["error"]["limit_bytes"] == 4096


def test_dotdot_paths_refused_on_native_api(platform: Platform) -> None:
    consumer = platform.token(Role.CONSUMER, "lab")
    with platform.client(consumer) as http:
        before = _listed(http)
        for field, value in (
            ("workdir", "/../etc"),
            ("workdir", ".."),
            ("stdin", "/data/../../etc/passwd"),
            ("stdout", "../out.txt"),
            ("stderr", "/x/.."),
            ("stdout", "/"),
        ):
            body = {"executors": [{"command": ["true"], field: value}]}
            for path in ("/v1/tasks", "/v1/quotes"):
                answer = http.post(path, json=body)
                assert answer.status_code == 422, (path, field, value, answer.text)
                error = _refused(answer, f"body.executors.0.{field}")
                assert "'..'" in error["message"]
        tes = {"executors": [{"image": "x", "command": ["true"], "workdir": "/a/../.."}]}
        _refused(http.post(f"{TES}/tasks", json=tes), "executors[0].workdir")
        assert _listed(http) == before
        fine = {"executors": [{"command": ["true"], "workdir": "/data/..x/y", "stdout": "o..txt"}]}
        assert http.post("/v1/tasks", json=fine).status_code == 201


def test_list_pages_are_bounded_in_bytes(platform: Platform) -> None:
    """A consumer stores sixteen tasks of almost 1 MiB each (each under the body limit): no page
    of the native or the TES list carries them all; each page says where the next starts, and
    following the pages gives every task exactly once."""
    consumer = platform.token(Role.CONSUMER, "hoarder")
    big = {f"V{n}": "x" * 120_000 for n in range(7)}  # ~0.84 MB of environment
    with platform.client(consumer) as http:
        for n in range(16):
            body = {"name": f"big-{n}", "executors": [{"command": ["true"], "env": big}]}
            created = http.post("/v1/tasks", json=body)
            assert created.status_code == 201, created.text
        seen: list[str] = []
        offset: str | None = "0"
        while offset is not None:
            page = http.get("/v1/tasks", params={"limit": 1000, "offset": offset})
            assert page.status_code == 200
            assert len(page.content) < 9 * 1024 * 1024  # a page stops at about 8 MiB
            seen += [t["id"] for t in page.json()]
            offset = page.headers.get("X-Next-Offset")
        assert len(seen) == len(set(seen)) == 16

        tes_seen: list[str] = []
        token: str | None = ""
        while token is not None:
            params = {"view": "BASIC", "page_size": 2048, "page_token": token}
            page = http.get("/ga4gh/tes/v1/tasks", params=params)
            assert page.status_code == 200
            assert len(page.content) < 9 * 1024 * 1024
            tes_seen += [t["id"] for t in page.json()["tasks"]]
            token = page.json().get("next_page_token")
        assert sorted(tes_seen) == sorted(seen)
