"""File staging for a task: inputs in before the first executor, outputs out after the last.

A task names files by task path (`/data/in.txt`, see `container_path`), and where they come from
or go to by URL. The agent understands two kinds of source and destination:
- inline `content` (inputs only), written as UTF-8;
- `file://` URLs (or bare absolute paths), which name files on the agent's machine: in practice
  a filesystem the agent shares with the submitter. A provider decides which directories tasks
  may read and write this way (`file_roots`, `suanli agent --file-root DIR`); a URL outside
  every root is refused, and with no roots every file URL is.

Inputs and outputs are files or whole directories (`type` FILE or DIRECTORY). An output path
with wildcards (`*`, `?`, `[...]`) selects many files at once; each match is copied to the
output's URL (a directory) joined with the match's path after `path_prefix`. Outputs are
copied only when every executor succeeded, and each copied file is reported as a TES
OutputFileLog (`url`, `path`, `size_bytes` as a string); directory outputs are flattened.
Volumes are empty directories made before the first executor.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from suanli.agent.backends import container_path
from suanli.errors import InvalidValue

__all__ = ["WILDCARDS", "local_path", "stage_in", "stage_out"]

WILDCARDS = frozenset("*?[")


def local_path(url: str, field: str, roots: Sequence[Path]) -> Path:
    """The local file a `file://` URL (or bare absolute path) names, if inside a root."""
    parsed = urlparse(url)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        path = Path(unquote(parsed.path))
    elif parsed.scheme == "" and url.startswith("/"):
        path = Path(url)
    else:
        raise InvalidValue(field, url, "a file:// URL", "file:// 网址")
    resolved = path.resolve()
    for root in roots:
        root = root.resolve()
        if resolved == root or root in resolved.parents:
            return resolved
    allowed = ", ".join(str(r) for r in roots) or "none (start the agent with --file-root DIR)"
    raise InvalidValue(
        field, url, f"a file under this agent's file roots: {allowed}", "位于代理允许的目录内"
    )


def stage_in(
    task_dir: Path,
    inputs: Sequence[Mapping[str, Any]],
    volumes: Sequence[str],
    roots: Sequence[Path],
) -> None:
    """Make the volumes, then write or copy every input into the task directory."""
    for n, volume in enumerate(volumes):
        if not isinstance(volume, str):
            raise InvalidValue(f"volumes[{n}]", volume, "a directory path", "目录路径")
        container_path(task_dir, volume, f"volumes[{n}]").mkdir(parents=True, exist_ok=True)
    for n, entry in enumerate(inputs):
        where = f"inputs[{n}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str):
            raise InvalidValue(where, entry, "a path and its content or URL", "路径与内容或网址")
        target = container_path(task_dir, entry["path"], f"{where}.path")
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry.get("content") is not None:
            target.write_text(str(entry["content"]), encoding="utf-8")
            continue
        source = local_path(str(entry.get("url") or ""), f"{where}.url", roots)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copyfile(source, target)
        else:
            raise InvalidValue(f"{where}.url", entry.get("url"), "an existing file", "存在的文件")


def stage_out(
    task_dir: Path, outputs: Sequence[Mapping[str, Any]], roots: Sequence[Path]
) -> list[dict[str, str]]:
    """Copy every output to its URL; one OutputFileLog per file copied."""
    logs: list[dict[str, str]] = []
    for n, entry in enumerate(outputs):
        where = f"outputs[{n}]"
        path, url = str(entry.get("path") or ""), str(entry.get("url") or "")
        destination = local_path(url, f"{where}.url", roots)
        if WILDCARDS & set(path):
            prefix = str(entry.get("path_prefix") or "")
            base = container_path(task_dir, prefix, f"{where}.path_prefix")
            pattern = str(task_dir.resolve()) + "/" + path.lstrip("/")
            for match in sorted(glob.glob(pattern)):
                found = Path(match).resolve()
                if base not in found.parents:
                    raise InvalidValue(
                        f"{where}.path_prefix", prefix, f"a prefix of {path}", "路径的前缀"
                    )
                relative = found.relative_to(base)
                inside = "/" + str(found.relative_to(task_dir.resolve()))
                logs += _copy_out(
                    found, destination / relative, url.rstrip("/") + f"/{relative}", inside
                )
            continue
        source = container_path(task_dir, path, f"{where}.path")
        if not source.exists():
            raise InvalidValue(
                f"{where}.path", path, "a file the executors wrote", "执行器写出的文件"
            )
        logs += _copy_out(source, destination, url, path)
    return logs


def _copy_out(source: Path, destination: Path, url: str, path: str) -> list[dict[str, str]]:
    """Copy a file or a directory tree; OutputFileLogs of the files, a directory flattened."""
    if source.is_dir():
        logs = []
        for folder, _, files in os.walk(source):
            for name in sorted(files):
                inner = Path(folder, name).relative_to(source)
                logs += _copy_out(
                    Path(folder, name),
                    destination / inner,
                    url.rstrip("/") + f"/{inner}",
                    f"{path.rstrip('/')}/{inner}",
                )
        return logs
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)
    return [{"url": url, "path": path, "size_bytes": str(destination.stat().st_size)}]
