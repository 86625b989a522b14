"""GA4GH TES on a live server, driven by the real py-tes client (and httpx for the filters
py-tes does not send), with a real agent running the tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tes

from suanli.services.core import Role

from .conftest import Platform

TES = "/ga4gh/tes/v1"


@pytest.fixture
def running(platform: Platform) -> tuple[Platform, str]:
    """A server with one provider site, a CPU pool and an agent; returns a consumer's token."""
    provider = platform.token(Role.PROVIDER, "tes provider")
    site = platform.site_with_pool(provider, count=4)
    platform.agent(provider, site, slots=2)
    return platform, platform.token(Role.CONSUMER, "tes consumer")


def _client(platform: Platform, token: str) -> tes.HTTPClient:
    return tes.HTTPClient(platform.url, token=token, timeout=30)


def test_py_tes_creates_waits_and_reads_a_task_in_every_view(
    running: tuple[Platform, str],
) -> None:
    platform, token = running
    client = _client(platform, token)
    info = client.get_service_info()
    assert info.type["artifact"] == "tes" and info.type["version"] == "1.1.0"

    task = tes.Task(
        name="hello",
        executors=[
            tes.Executor(image="alpine", command=["sh", "-c", "echo hello tes"]),
            tes.Executor(image="alpine", command=["sh", "-c", "echo second >&2"]),
        ],
        resources=tes.Resources(cpu_cores=1, backend_parameters={"policy": "cost"}),
        tags={"project": "demo"},
    )
    task_id = client.create_task(task)
    client.wait(task_id, timeout=60)

    full = client.get_task(task_id, view="FULL")
    assert full.state == "COMPLETE"
    assert full.name == "hello" and full.tags == {"project": "demo"}
    assert [e.command for e in full.executors] == [e.command for e in task.executors]
    first, second = full.logs[0].logs  # one ExecutorLog per executor, with its own output
    assert (first.exit_code, first.stdout, first.stderr) == (0, "hello tes\n", "")
    assert (second.exit_code, second.stdout, second.stderr) == (0, "", "second\n")
    assert "pool-" in full.logs[0].metadata["pool"]

    with platform.client(token) as http:
        minimal = http.get(f"{TES}/tasks/{task_id}").json()
        assert minimal == {"id": task_id, "state": "COMPLETE"}
        basic = http.get(f"{TES}/tasks/{task_id}", params={"view": "BASIC"}).json()
        assert "stdout" not in basic["logs"][0]["logs"][0]
        assert basic["logs"][0]["logs"][0]["exit_code"] == 0
        # suanli's own fields never leak into a TES document
        assert set(basic) <= {
            "id",
            "state",
            "name",
            "description",
            "inputs",
            "outputs",
            "resources",
            "executors",
            "volumes",
            "tags",
            "logs",
            "creation_time",
        }


def test_a_failing_executor_ends_the_task_unless_it_ignores_errors(
    running: tuple[Platform, str],
) -> None:
    platform, token = running
    client = _client(platform, token)
    task_id = client.create_task(
        tes.Task(executors=[tes.Executor(image="alpine", command=["sh", "-c", "exit 3"])])
    )
    client.wait(task_id, timeout=60)
    full = client.get_task(task_id, view="FULL")
    assert full.state == "EXECUTOR_ERROR"
    assert full.logs[0].logs[0].exit_code == 3

    ignoring = client.create_task(
        tes.Task(
            executors=[
                tes.Executor(image="alpine", command=["sh", "-c", "exit 3"], ignore_error=True),
                tes.Executor(image="alpine", command=["echo", "still ran"]),
            ]
        )
    )
    client.wait(ignoring, timeout=60)
    full = client.get_task(ignoring, view="FULL")
    assert full.state == "COMPLETE"
    assert [log.exit_code for log in full.logs[0].logs] == [3, 0]
    assert full.logs[0].logs[1].stdout == "still ran\n"


def test_input_content_is_written_before_the_first_executor(
    running: tuple[Platform, str],
) -> None:
    platform, token = running
    client = _client(platform, token)
    task_id = client.create_task(
        tes.Task(
            inputs=[tes.Input(path="/data/in.txt", content="numbers 1 2 3\n", type="FILE")],
            executors=[tes.Executor(image="alpine", command=["sh", "-c", "wc -w < data/in.txt"])],
        )
    )
    client.wait(task_id, timeout=60)
    full = client.get_task(task_id, view="FULL")
    assert full.state == "COMPLETE", full.logs
    assert full.logs[0].logs[0].stdout.strip() == "4"
    assert full.inputs[0].content == "numbers 1 2 3\n"
    assert client.get_task(task_id, view="BASIC").inputs[0].content is None


def test_cancel_a_running_task(running: tuple[Platform, str]) -> None:
    platform, token = running
    client = _client(platform, token)
    task_id = client.create_task(
        tes.Task(executors=[tes.Executor(image="alpine", command=["sleep", "60"])])
    )
    assert platform.wait_for(token, task_id, {"RUNNING"})["state"] == "RUNNING"
    client.cancel_task(task_id)
    assert platform.wait_for(token, task_id, {"CANCELED"}, 60)["state"] == "CANCELED"


def test_list_filters_and_pages(platform: Platform) -> None:
    token = platform.token(Role.CONSUMER, "lister")  # no agent: the tasks stay QUEUED
    client = _client(platform, token)
    made: dict[str, dict[str, str]] = {}
    for n in range(5):
        tags = {"run": "a" if n < 3 else "b", **({"gpu": ""} if n == 0 else {})}
        task = tes.Task(
            name=f"batch-{n}",
            executors=[tes.Executor(image="x", command=["true"])],
            tags=tags,
        )
        made[client.create_task(task)] = tags
    client.create_task(
        tes.Task(name="other", executors=[tes.Executor(image="x", command=["true"])])
    )

    with platform.client(token) as http:

        def ids(**params: Any) -> list[str]:
            response = http.get(f"{TES}/tasks", params=params)
            assert response.status_code == 200, response.text
            return [t["id"] for t in response.json()["tasks"]]

        assert len(ids()) == 6
        assert set(ids(name_prefix="batch-")) == set(made)
        assert ids(name_prefix="atch") == []  # a prefix, not a substring
        assert ids(name_prefix="b_") == []  # taken literally, not as a LIKE pattern
        assert len(ids(tag_key="run", tag_value="a")) == 3
        assert len(ids(tag_key="run")) == 5  # a key without a value matches any value
        assert len(ids(tag_key=["run", "gpu"], tag_value=["a"])) == 1
        assert len(ids(state="QUEUED")) == 6 and ids(state="COMPLETE") == []

        seen: list[str] = []
        token_: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"page_size": 2, "view": "BASIC"}
            if token_:
                params["page_token"] = token_
            page = http.get(f"{TES}/tasks", params=params).json()
            assert len(page["tasks"]) <= 2
            seen += [t["id"] for t in page["tasks"]]
            pages += 1
            token_ = page.get("next_page_token")
            if not token_:
                break
        assert pages == 3 and len(set(seen)) == 6

    listed = client.list_tasks(view="MINIMAL", page_size=4)
    assert len(listed.tasks) == 4 and listed.next_page_token


def test_bad_tes_input_is_a_400_naming_the_field(platform: Platform) -> None:
    token = platform.token(Role.CONSUMER, "bad input")
    with platform.client(token) as http:
        strict = http.post(
            f"{TES}/tasks",
            json={
                "executors": [{"image": "x", "command": ["true"]}],
                "resources": {
                    "backend_parameters": {"colour": "red"},
                    "backend_parameters_strict": True,
                },
            },
        )
        assert strict.status_code == 400
        assert strict.json()["error"]["field"] == "resources.backend_parameters.colour"
        lenient = http.post(
            f"{TES}/tasks",
            json={
                "executors": [{"image": "x", "command": ["true"]}],
                "resources": {"backend_parameters": {"colour": "red"}},
            },
        )
        assert lenient.status_code == 200
        for url in ("s3://bucket/in", "https://example.org/in", "file:///srv/in", "/srv/in"):
            staged = http.post(
                f"{TES}/tasks",
                json={
                    "executors": [{"image": "x", "command": ["cat", "/in"]}],
                    "inputs": [{"url": url, "path": "/in"}],
                },
            )
            assert staged.status_code == 200, (url, staged.json())
        for url in ("ftp://host/in", "s3:///no-bucket", "http://", "in.txt"):
            staged = http.post(
                f"{TES}/tasks",
                json={
                    "executors": [{"image": "x", "command": ["cat", "/in"]}],
                    "inputs": [{"url": url, "path": "/in"}],
                },
            )
            assert staged.status_code == 400, url
            assert staged.json()["error"]["field"] == "inputs[0].url"
            assert "s3://bucket/key" in staged.json()["error"]["message"]
        for document, field in (
            ({"outputs": [{"path": "/o", "url": "gs://b/o"}]}, "outputs[0].url"),
            ({"outputs": [{"path": "/o", "url": "https://example.org/o"}]}, "outputs[0].url"),
            ({"outputs": [{"path": "/o/*.txt", "url": "file:///x"}]}, "outputs[0].path_prefix"),
            ({"volumes": ["/v/../../etc"]}, "volumes[0]"),
            ({"resources": {"zones": ["Atlantis"]}}, "zones[0]"),
        ):
            answer = http.post(
                f"{TES}/tasks",
                json={"executors": [{"image": "x", "command": ["true"]}], **document},
            )
            assert answer.status_code == 400, document
            assert answer.json()["error"]["field"] == field, answer.json()
        escaping = http.post(
            f"{TES}/tasks",
            json={
                "executors": [{"image": "x", "command": ["true"]}],
                "inputs": [{"path": "/../../etc/x", "content": "no"}],
            },
        )
        assert escaping.status_code == 400
        assert escaping.json()["error"]["field"] == "inputs[0].path"
        assert http.get(f"{TES}/tasks", params={"view": "EVERYTHING"}).status_code == 400
        # nothing half-written: only the lenient task and the four staged ones exist
        assert len(http.get(f"{TES}/tasks").json()["tasks"]) == 5


def test_files_volumes_and_wildcard_outputs(platform: Platform, tmp_path: Path) -> None:
    provider = platform.token(Role.PROVIDER, "files provider")
    site = platform.site_with_pool(provider, count=4)
    shared = tmp_path / "shared"
    (shared / "reads").mkdir(parents=True)
    for name in ("a", "b"):
        (shared / "reads" / f"{name}.txt").write_text(f"read {name}\n")
    platform.agent(provider, site, 2, "--file-root", str(shared))
    token = platform.token(Role.CONSUMER, "files consumer")
    client = _client(platform, token)
    task_id = client.create_task(
        tes.Task(
            inputs=[tes.Input(path="/in/reads", url=f"file://{shared}/reads", type="DIRECTORY")],
            outputs=[
                tes.Output(path="/out/*.upper", path_prefix="/out", url=f"file://{shared}/up"),
                tes.Output(path="/vol/tree", url=f"file://{shared}/tree", type="DIRECTORY"),
            ],
            volumes=["/vol/tree"],
            executors=[
                tes.Executor(
                    image="alpine",
                    command=[
                        "sh",
                        "-c",
                        "mkdir -p out && for f in in/reads/*.txt; do "
                        "tr a-z A-Z < $f > out/$(basename $f .txt).upper; done; "
                        "ls in/reads > vol/tree/listing",
                    ],
                )
            ],
        )
    )
    client.wait(task_id, timeout=60)
    full = client.get_task(task_id, view="FULL")
    assert full.state == "COMPLETE", full.logs
    assert (shared / "up" / "a.upper").read_text() == "READ A\n"
    assert (shared / "up" / "b.upper").read_text() == "READ B\n"
    assert (shared / "tree" / "listing").read_text() == "a.txt\nb.txt\n"
    logged = {(o.path, o.url, o.size_bytes) for o in full.logs[0].outputs}  # py-tes: ints
    assert logged == {
        ("/out/a.upper", f"file://{shared}/up/a.upper", 7),
        ("/out/b.upper", f"file://{shared}/up/b.upper", 7),
        ("/vol/tree/listing", f"file://{shared}/tree/listing", 12),
    }

    # a file outside the agent's roots is never read: the task ends SYSTEM_ERROR, saying why
    outside = client.create_task(
        tes.Task(
            inputs=[tes.Input(path="/in/passwd", url="file:///etc/passwd")],
            executors=[tes.Executor(image="alpine", command=["cat", "in/passwd"])],
        )
    )
    client.wait(outside, timeout=60)
    refused = client.get_task(outside, view="FULL")
    assert refused.state == "SYSTEM_ERROR"
    assert "file roots" in refused.logs[0].system_logs[-1]  # the state change, with its reason


def test_zones_restrict_placement_and_unknown_parameters_are_not_kept(
    platform: Platform,
) -> None:
    provider = platform.token(Role.PROVIDER, "zoned provider")
    shanghai = platform.site_with_pool(provider, count=4, province="上海", price=1)
    guizhou = platform.site_with_pool(provider, count=4, province="贵州", price=50)
    platform.agent(provider, shanghai, 2)
    platform.agent(provider, guizhou, 2)
    token = platform.token(Role.CONSUMER, "zoned consumer")
    client = _client(platform, token)
    task_id = client.create_task(
        tes.Task(
            executors=[tes.Executor(image="alpine", command=["true"])],
            resources=tes.Resources(
                zones=["Guizhou"], backend_parameters={"policy": "cost", "VmSize": "big"}
            ),
        )
    )
    client.wait(task_id, timeout=60)
    task = client.get_task(task_id, view="BASIC")
    assert task.state == "COMPLETE"
    assert task.logs[0].metadata["site"] == guizhou  # the cheaper Shanghai pool is out of zone
    assert task.resources.backend_parameters == {"policy": "cost"}  # VmSize: not ours, dropped
