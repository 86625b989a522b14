"""File staging for a task: inputs in before the first executor, outputs out after the last.

A task names files by task path (`/data/in.txt`, see `container_path`), and where they come from
or go to by URL. The agent understands these sources and destinations:
- inline `content` (inputs only), written as UTF-8;
- `file://` URLs (or bare absolute paths), which name files on the agent's machine: in practice
  a filesystem the agent shares with the submitter. A provider decides which directories tasks
  may read and write this way (`file_roots`, `suanli agent --file-root DIR`); a URL outside
  every root is refused, and with no roots every file URL is;
- `s3://bucket/key` URLs (inputs and outputs), read and written with the agent's own S3
  configuration, in the buckets the provider allows (`suanli.agent.objects`);
- `http://` and `https://` URLs (inputs only), downloaded.

Outputs are all or nothing where that can be checked first: every source is found and every
bucket asked before the first copy, and a copy that fails midway removes what it wrote.

Inputs and outputs are files or whole directories (`type` FILE or DIRECTORY). An output path
with wildcards (`*`, `?`, `[...]`) selects many files at once; each match is copied to the
output's URL (a directory) joined with the match's path after `path_prefix`. Outputs are
copied only when every executor succeeded, and each copied file is reported as a TES
OutputFileLog (`url`, `path`, `size_bytes` as a string); directory outputs are flattened.
Volumes are empty directories made before the first executor.

Symbolic links never carry a copy out of bounds. Every file staged in is resolved and must lie
under a file root (a link in an input directory that points elsewhere, `/etc/hostname` say,
refuses the input, naming the link); every file staged out is resolved and must lie inside the
task directory (a task cannot publish a host file by leaving a link to it in an output); every
destination is resolved and must lie under a file root (a link planted in a destination directory
cannot redirect a copy). Links that stay inside their bounds are followed; a directory that links
back into itself is refused. Special files (sockets, FIFOs, devices) are not copied.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from suanli.agent.backends import container_path
from suanli.agent.objects import Remote, is_remote
from suanli.errors import InvalidValue

__all__ = ["WILDCARDS", "has_remote", "local_path", "stage_in", "stage_out"]

WILDCARDS = frozenset("*?[")


def _within(resolved: Path, roots: Sequence[Path]) -> bool:
    """Whether a resolved path is one of `roots` or below one."""
    for root in roots:
        root = root.resolve()
        if resolved == root or root in resolved.parents:
            return True
    return False


def _outside_roots(field: str, url: str, roots: Sequence[Path], detail: str = "") -> InvalidValue:
    allowed = ", ".join(str(r) for r in roots) or "none (start the agent with --file-root DIR)"
    return InvalidValue(
        field,
        url,
        f"a file under this agent's file roots: {allowed}{detail}",
        f"位于代理允许的目录内{detail}",
    )


def local_path(url: str, field: str, roots: Sequence[Path]) -> Path:
    """The local file a `file://` URL (or bare absolute path) names, resolved (links followed),
    if inside a root."""
    parsed = urlparse(url)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        path = Path(unquote(parsed.path))
    elif parsed.scheme == "" and url.startswith("/"):
        path = Path(url)
    else:
        raise InvalidValue(field, url, "a file:// URL", "file:// 网址")
    resolved = path.resolve()
    if not _within(resolved, roots):
        raise _outside_roots(field, url, roots)
    return resolved


def has_remote(entries: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any input or output names a remote URL (`s3://`, `http(s)://`): its transfer may
    take minutes, so the agent runs it off its loop."""
    return any(
        isinstance(entry, Mapping) and is_remote(str(entry.get("url") or "")) for entry in entries
    )


def stage_in(
    task_dir: Path,
    inputs: Sequence[Mapping[str, Any]],
    volumes: Sequence[str],
    roots: Sequence[Path],
    remote: Remote | None = None,
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
        url = str(entry.get("url") or "")
        if is_remote(url):
            remote = remote or Remote()
            remote.get(f"{where}.url", url, target, directory=entry.get("type") == "DIRECTORY")
            continue
        source = local_path(url, f"{where}.url", roots)
        if source.is_dir():
            _copy_tree_in(source, target, roots, f"{where}.url", url)
        elif source.is_file():
            shutil.copyfile(source, target)
        else:
            raise InvalidValue(f"{where}.url", entry.get("url"), "an existing file", "存在的文件")


def _copy_tree_in(source: Path, target: Path, roots: Sequence[Path], field: str, url: str) -> None:
    """Copy a directory input file by file, each one resolved and checked against the roots."""
    seen: set[Path] = set()

    def walk(folder: Path, into: Path) -> None:
        real = folder.resolve()
        if real in seen:
            raise InvalidValue(
                field, url, f"a directory without link loops ({folder})", "不含循环链接的目录"
            )
        seen.add(real)
        into.mkdir(parents=True, exist_ok=True)
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            path = Path(entry.path)
            resolved = path.resolve()
            if not _within(resolved, roots):
                raise _outside_roots(field, url, roots, f" ({path} links to {resolved})")
            if resolved.is_dir():
                walk(path, into / entry.name)
            elif resolved.is_file():
                shutil.copyfile(resolved, into / entry.name)

    walk(source, target)


def stage_out(
    task_dir: Path,
    outputs: Sequence[Mapping[str, Any]],
    roots: Sequence[Path],
    remote: Remote | None = None,
) -> list[dict[str, str]]:
    """Copy every output to its URL; one OutputFileLog per file copied.

    All or nothing as far as it can be: every source is found and checked, and every bucket
    written to is asked whether it answers, before the first byte is written; when a copy then
    fails, the objects uploaded and the files created so far are removed again."""
    remote = remote or Remote()
    plan: list[_Copy] = []
    for n, entry in enumerate(outputs):
        where = f"outputs[{n}]"
        path, url = str(entry.get("path") or ""), str(entry.get("url") or "")
        destination: Path | None = None
        if is_remote(url):
            if urlparse(url).scheme != "s3":
                raise InvalidValue(
                    f"{where}.url", url, "a file:// or s3:// URL", "file:// 或 s3:// 网址"
                )
            remote.check_bucket(f"{where}.url", url)
        else:
            destination = local_path(url, f"{where}.url", roots)
        bounds = _Bounds(task_dir.resolve(), roots, where, url)
        if WILDCARDS & set(path):
            prefix = str(entry.get("path_prefix") or "")
            base = container_path(task_dir, prefix, f"{where}.path_prefix")
            pattern = str(task_dir.resolve()) + "/" + path.lstrip("/")
            for match in sorted(glob.glob(pattern)):
                found = Path(match).resolve()
                bounds.source(Path(match), found)
                if base not in found.parents:
                    raise InvalidValue(
                        f"{where}.path_prefix", prefix, f"a prefix of {path}", "路径的前缀"
                    )
                relative = found.relative_to(base)
                inside = "/" + str(found.relative_to(task_dir.resolve()))
                _plan_out(
                    found,
                    None if destination is None else destination / relative,
                    url.rstrip("/") + f"/{relative}",
                    inside,
                    bounds,
                    plan,
                )
            continue
        source = container_path(task_dir, path, f"{where}.path")
        if not source.exists():
            raise InvalidValue(
                f"{where}.path", path, "a file the executors wrote", "执行器写出的文件"
            )
        _plan_out(source, destination, url, path, bounds, plan)
    return _copy_all(plan, remote)


class _Bounds:
    """Where one output may read (the task directory) and write (the file roots)."""

    def __init__(self, task_root: Path, roots: Sequence[Path], where: str, url: str) -> None:
        self.task_root, self.roots, self.where, self.url = task_root, roots, where, url
        self.folders: set[Path] = set()  # directories copied so far (a link loop ends here)

    def source(self, path: Path, resolved: Path) -> None:
        if resolved != self.task_root and self.task_root not in resolved.parents:
            raise InvalidValue(
                f"{self.where}.path",
                str(path),
                f"a file inside the task directory (it links to {resolved})",
                f"任务目录内的文件（它链接到 {resolved}）",
            )

    def destination(self, path: Path) -> Path:
        resolved = path.resolve()
        if not _within(resolved, self.roots):
            raise _outside_roots(
                f"{self.where}.url", self.url, self.roots, f" ({path} resolves to {resolved})"
            )
        return resolved


@dataclass(frozen=True)
class _Copy:
    """One file to copy out: from `source` (resolved, inside the task directory) to `url`, a
    local `destination` or (None) an object."""

    source: Path
    destination: Path | None
    url: str
    path: str
    bounds: _Bounds


def _plan_out(
    source: Path,
    destination: Path | None,
    url: str,
    path: str,
    bounds: _Bounds,
    plan: list[_Copy],
) -> None:
    """The files of a file or a directory tree to copy, a directory flattened; each file read is
    resolved inside the task directory."""
    resolved = source.resolve()
    bounds.source(source, resolved)
    if resolved.is_dir():
        if resolved in bounds.folders:
            raise InvalidValue(
                f"{bounds.where}.path",
                str(source),
                "a directory without link loops",
                "不含循环链接的目录",
            )
        bounds.folders.add(resolved)
        for entry in sorted(os.scandir(source), key=lambda e: e.name):
            _plan_out(
                Path(entry.path),
                None if destination is None else destination / entry.name,
                url.rstrip("/") + f"/{entry.name}",
                f"{path.rstrip('/')}/{entry.name}",
                bounds,
                plan,
            )
        return
    if resolved.is_file():  # sockets, FIFOs and devices are not copied
        plan.append(_Copy(resolved, destination, url, path, bounds))


def _copy_all(plan: Sequence[_Copy], remote: Remote) -> list[dict[str, str]]:
    """Carry out a plan; on a failure, remove what it wrote, then raise. Each local destination
    is resolved under a file root, again just before the copy (a link planted meanwhile)."""
    logs: list[dict[str, str]] = []
    uploaded: list[str] = []
    created: list[Path] = []
    try:
        for item in plan:
            if item.destination is None:
                remote.put(f"{item.bounds.where}.url", item.source, item.url)
                uploaded.append(item.url)
                size = item.source.stat().st_size
            else:
                target = item.bounds.destination(item.destination)
                target.parent.mkdir(parents=True, exist_ok=True)
                target = item.bounds.destination(item.destination)
                existed = target.exists()
                shutil.copyfile(item.source, target)
                if not existed:
                    created.append(target)
                size = target.stat().st_size
            logs.append({"url": item.url, "path": item.path, "size_bytes": str(size)})
    except BaseException:
        if uploaded:
            remote.delete(uploaded)
        for target in created:
            target.unlink(missing_ok=True)
        raise
    return logs
