"""A two-job Toil workflow for TES: the first job writes a text to Toil's job store, its child
reads it back and returns it in capitals; the result is written to `--out`.

    python shout.py JOBSTORE --batchSystem tes --tesEndpoint http://HOST:PORT/ga4gh/tes \
        --tesBearerToken TOKEN --out result.txt --disableChaining

Each job runs as one TES task on the compute network (see docs/tes.md, "Toil"); without
`--disableChaining` Toil runs the child in its parent's task.
"""

from __future__ import annotations

from toil.common import Toil
from toil.job import Job


def write(job: Job, text: str) -> object:
    """Store `text` in the job store; the child job reads it."""
    path = job.fileStore.getLocalTempFile()
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    stored = job.fileStore.writeGlobalFile(path)
    return job.addChildJobFn(shout, stored).rv()


def shout(job: Job, stored: object) -> str:
    """The stored text in capitals."""
    with open(job.fileStore.readGlobalFile(stored), encoding="utf-8") as handle:
        return handle.read().upper()


def main() -> None:
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("--out", required=True, help="where to write the result")
    options = parser.parse_args()
    with Toil(options) as toil:
        result = toil.start(Job.wrapJobFn(write, "hello from the compute network\n"))
    with open(options.out, "w", encoding="utf-8") as handle:
        handle.write(result)


if __name__ == "__main__":
    main()
