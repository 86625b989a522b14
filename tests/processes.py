"""Finding a task's processes on the host from a test: a task's own pids are private to its PID
namespace, so tests find its processes by their command line instead."""

from __future__ import annotations

from pathlib import Path


def pids_of(argument: str, *, word: bool = False) -> list[int]:
    """Host pids of the live, non-zombie processes whose command line holds `argument` (as one
    of its words when `word`, else anywhere: a shell's script, the wrappers' argv)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone between the looks
        held = argument.encode() in words if word else argument.encode() in b" ".join(words)
        if held and state != "Z":
            found.append(int(entry.name))
    return found
