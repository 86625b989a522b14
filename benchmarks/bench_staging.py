"""Benchmark of the agent's object-storage staging against bare boto3 on the same server.

The S3-compatible server is the one `make test` uses (scripts/s3.sh: moto's standalone server on
loopback). Each case moves the same data twice, once through the agent's staging
(`suanli.agent.staging.stage_in` / `stage_out` with an `objects.Remote`: the bucket allow-list,
the plan, the bucket check before the first write, the OutputFileLogs) and once with bare boto3
calls, the fastest way for each size (`download_file` / `upload_file` for the large object, a
plain `get_object` / `put_object` for each small one; same client settings): the ratio is what
staging costs over the transfer itself. Cases: one 64 MiB object, and 200 objects of 4 KiB as a
DIRECTORY input and a wildcard output. Best of REPEATS. Prints the figures and writes
benchmarks/results/staging.json. Nothing is asserted: timings depend on the machine.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "staging.json"
ROOT = Path(__file__).resolve().parents[1]
BIG_MIB = 64
SMALL = 200
SMALL_BYTES = 4096
REPEATS = 3
KEYS = {"access_key_id": "bench-key", "secret_access_key": "bench-secret"}


def _endpoint() -> str:
    started = subprocess.run(
        [str(ROOT / "scripts" / "s3.sh"), "start"], capture_output=True, text=True, check=True
    )
    return started.stdout.strip()


def _best(run: Callable[[], None]) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    from suanli.agent.objects import Remote, S3Config
    from suanli.agent.staging import stage_in, stage_out

    endpoint = _endpoint()
    bucket = f"bench-{secrets.token_hex(4)}"
    config = S3Config(endpoint_url=endpoint, buckets=(bucket,), **KEYS)
    remote = Remote(config)
    client = config.client()
    client.create_bucket(Bucket=bucket)
    work = Path(tempfile.mkdtemp(prefix="suanli-bench-staging-", dir="/var/tmp"))
    source = work / "source"
    (source / "many").mkdir(parents=True)
    (source / "big.bin").write_bytes(os.urandom(BIG_MIB << 20))
    for n in range(SMALL):
        (source / "many" / f"f{n:04d}.dat").write_bytes(os.urandom(SMALL_BYTES))
    client.upload_file(str(source / "big.bin"), bucket, "in/big.bin")
    for n in range(SMALL):
        client.upload_file(str(source / "many" / f"f{n:04d}.dat"), bucket, f"in/many/f{n:04d}.dat")
    print(f"S3 server {endpoint}, bucket {bucket}; best of {REPEATS}")

    def fresh(name: str) -> Path:
        path = work / name / secrets.token_hex(4)
        path.mkdir(parents=True)
        return path

    cases: dict[str, dict[str, Any]] = {}

    def case(name: str, size_mib: float, staged: Callable[[], None], bare: Callable[[], None]):
        staged_s, bare_s = _best(staged), _best(bare)
        cases[name] = {
            "mib": round(size_mib, 2),
            "staging_s": round(staged_s, 4),
            "bare_boto3_s": round(bare_s, 4),
            "ratio": round(staged_s / bare_s, 3),
            "staging_mib_s": round(size_mib / staged_s, 1),
        }
        print(
            f"{name:<28} staging {staged_s:7.3f} s  bare boto3 {bare_s:7.3f} s  "
            f"ratio {staged_s / bare_s:5.2f}  ({size_mib / staged_s:6.1f} MiB/s)"
        )

    big_url = f"s3://{bucket}/in/big.bin"
    case(
        f"get 1 x {BIG_MIB} MiB",
        BIG_MIB,
        lambda: stage_in(fresh("in"), [{"path": "/big.bin", "url": big_url}], [], [], remote),
        lambda: client.download_file(bucket, "in/big.bin", str(fresh("bare") / "big.bin")),
    )

    def bare_get_many() -> None:
        into = fresh("bare")
        for n in range(SMALL):
            body = client.get_object(Bucket=bucket, Key=f"in/many/f{n:04d}.dat")["Body"]
            (into / f"f{n:04d}.dat").write_bytes(body.read())

    small_mib = SMALL * SMALL_BYTES / (1 << 20)
    case(
        f"get {SMALL} x 4 KiB (DIRECTORY)",
        small_mib,
        lambda: stage_in(
            fresh("in"),
            [{"path": "/many", "url": f"s3://{bucket}/in/many", "type": "DIRECTORY"}],
            [],
            [],
            remote,
        ),
        bare_get_many,
    )
    case(
        f"put 1 x {BIG_MIB} MiB",
        BIG_MIB,
        lambda: stage_out(
            source, [{"path": "/big.bin", "url": f"s3://{bucket}/out/big.bin"}], [], remote
        ),
        lambda: client.upload_file(str(source / "big.bin"), bucket, "bare/big.bin"),
    )

    def bare_put_many() -> None:
        for n in range(SMALL):
            name = f"f{n:04d}.dat"
            with open(source / "many" / name, "rb") as body:
                client.put_object(Bucket=bucket, Key=f"bare/many/{name}", Body=body)

    case(
        f"put {SMALL} x 4 KiB (wildcard)",
        small_mib,
        lambda: stage_out(
            source,
            [{"path": "/many/*.dat", "path_prefix": "/many", "url": f"s3://{bucket}/out/many"}],
            [],
            remote,
        ),
        bare_put_many,
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "server": "moto standalone (scripts/s3.sh), loopback",
                "repeats": REPEATS,
                "cases": cases,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")
    subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
