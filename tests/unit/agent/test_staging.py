"""File staging on real files: inputs in, outputs out, and the roots that bound both."""

from __future__ import annotations

from pathlib import Path

import pytest

from suanli.agent.staging import local_path, stage_in, stage_out
from suanli.errors import InvalidValue


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    root = tmp_path / "shared"
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "dir" / "b.txt").write_text("beta\n")
    (root / "dir" / "sub" / "c.txt").write_text("gamma\n")
    return root


def test_inputs_content_files_directories_and_volumes(shared: Path, tmp_path: Path) -> None:
    task = tmp_path / "task"
    inputs = [
        {"path": "/data/note.txt", "content": "inline\n"},
        {"path": "/data/a.txt", "url": f"file://{shared}/a.txt", "type": "FILE"},
        {"path": "/data/tree", "url": str(shared / "dir"), "type": "DIRECTORY"},  # bare path
    ]
    stage_in(task, inputs, ["/vol/scratch"], [shared])
    assert (task / "data" / "note.txt").read_text() == "inline\n"
    assert (task / "data" / "a.txt").read_text() == "alpha\n"
    assert (task / "data" / "tree" / "sub" / "c.txt").read_text() == "gamma\n"
    assert (task / "vol" / "scratch").is_dir() and not any((task / "vol" / "scratch").iterdir())


def test_urls_outside_the_roots_and_other_schemes_are_refused(shared: Path) -> None:
    with pytest.raises(InvalidValue, match="file roots"):
        local_path("file:///etc/passwd", "inputs[0].url", [shared])
    with pytest.raises(InvalidValue, match="file roots"):
        local_path(f"file://{shared}/../escape", "inputs[0].url", [shared])  # resolved first
    with pytest.raises(InvalidValue, match="--file-root"):
        local_path(f"file://{shared}/a.txt", "inputs[0].url", [])  # no roots: nothing
    with pytest.raises(InvalidValue, match="file://"):
        local_path("s3://bucket/a.txt", "inputs[0].url", [shared])
    assert local_path(f"file://{shared}/a%20b", "x", [shared]) == shared / "a b"


def test_an_input_path_cannot_leave_the_task_directory(shared: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidValue) as caught:
        stage_in(tmp_path / "task", [{"path": "/../../x", "content": "no"}], [], [shared])
    assert caught.value.field == "inputs[0].path"
    assert not (tmp_path / "x").exists()


def test_outputs_files_trees_and_wildcards(shared: Path, tmp_path: Path) -> None:
    task = tmp_path / "task"
    (task / "out" / "tree" / "deep").mkdir(parents=True)
    (task / "out" / "one.csv").write_text("1\n")
    (task / "out" / "two.csv").write_text("22\n")
    (task / "out" / "tree" / "deep" / "x.txt").write_text("xyz\n")
    outputs = [
        {"path": "/out/one.csv", "url": f"file://{shared}/res/one.csv", "type": "FILE"},
        {"path": "/out/*.csv", "path_prefix": "/out", "url": f"file://{shared}/all"},
        {"path": "/out/tree", "url": f"file://{shared}/tree", "type": "DIRECTORY"},
    ]
    logs = stage_out(task, outputs, [shared])
    assert (shared / "res" / "one.csv").read_text() == "1\n"
    assert (shared / "all" / "two.csv").read_text() == "22\n"
    assert (shared / "tree" / "deep" / "x.txt").read_text() == "xyz\n"
    assert logs == [
        {"url": f"file://{shared}/res/one.csv", "path": "/out/one.csv", "size_bytes": "2"},
        {"url": f"file://{shared}/all/one.csv", "path": "/out/one.csv", "size_bytes": "2"},
        {"url": f"file://{shared}/all/two.csv", "path": "/out/two.csv", "size_bytes": "3"},
        {
            "url": f"file://{shared}/tree/deep/x.txt",
            "path": "/out/tree/deep/x.txt",
            "size_bytes": "4",
        },
    ]


def test_a_missing_output_names_its_field(shared: Path, tmp_path: Path) -> None:
    (tmp_path / "task").mkdir()
    with pytest.raises(InvalidValue) as caught:
        stage_out(tmp_path / "task", [{"path": "/nope", "url": f"file://{shared}/n"}], [shared])
    assert caught.value.field == "outputs[0].path"
