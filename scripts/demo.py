"""`make demo`: the whole platform on this machine, on the embedded SQLite.

Starts `suanli serve`, creates an operator, a provider and a consumer, registers a site with a
pool of this machine's CPU cores, starts an agent for it, submits a few real commands, shows
them placed and finished and what each cost (every task is an order: its maximum price is held
from the consumer's wallet when it is placed and it is charged for what ran), then leaves the
server running with its URL and tokens printed.
Ctrl-C stops the agent and the server cleanly.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

from suanli.services import market
from suanli.services.core import Role, create_token
from suanli.store.db import make_engine, session_factory, upgrade

HOME = Path(os.environ.get("SUANLI_DEMO_HOME", ".suanli-demo")).resolve()
SUANLI = [sys.executable, "-m", "suanli"]
COMMANDS = [
    ["uname", "-sm"],
    [
        os.path.realpath(sys.executable),
        "-c",
        "import math; print(round(sum(math.sqrt(i) for i in range(10**6))))",
    ],
    ["sh", "-c", "echo computing on the compute network...; sleep 1; echo done"],
    ["sh", "-c", "echo this one fails on purpose >&2; exit 3"],
]


def log_file(name: str) -> IO[bytes]:
    """A child's log; it stays open as long as the child runs."""
    return open(HOME / name, "wb")


def port() -> int:
    wanted = int(os.environ.get("SUANLI_PORT", "8000"))
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", wanted))
            return wanted
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])


DEMO_TOPUP_FEN = 100_000  # 1,000.00 yuan in the demo consumer's wallet
# a demo price, so that tasks of a few seconds cost whole fen (360.00 yuan per core-hour)
DEMO_PRICE_FEN = 36_000
DEMO_DURATION_S = "10"  # each task's estimate: its maximum price is 10 s of a core


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d} CNY"


def main() -> int:
    shutil.rmtree(HOME, ignore_errors=True)
    HOME.mkdir(parents=True)
    database = f"sqlite:///{HOME / 'suanli.db'}"
    engine = make_engine(database)
    upgrade(engine)
    with session_factory(engine).begin() as session:
        made = {role: create_token(session, role, f"demo {role.value}") for role in Role}
        tokens = {role: token for role, (_, token) in made.items()}
        consumer_id = made[Role.CONSUMER][0].id
        # a top-up, so that quotes can be accepted (from the CLI or the web console)
        market.credit(session, made[Role.OPERATOR][0], made[Role.CONSUMER][0].id, DEMO_TOPUP_FEN)
    engine.dispose()
    url = f"http://127.0.0.1:{port()}"
    env = {
        **os.environ,
        "SUANLI_HOME": str(HOME),
        "SUANLI_SCHEDULE_INTERVAL_S": "0.5",
        "SUANLI_HEARTBEAT_S": "1",
    }
    children: list[subprocess.Popen[bytes]] = []

    def stop(*_: object) -> None:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        print("\nstopped the agent and the server / 已停止代理与服务", file=sys.stderr)

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        print(f"starting the server at {url} / 启动服务 ...", file=sys.stderr)
        children.append(
            subprocess.Popen(
                [*SUANLI, "serve", "--port", url.rsplit(":", 1)[1], "--db", database],
                env=env,
                stdout=log_file("server.log"),
                stderr=subprocess.STDOUT,
            )
        )
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        provider = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {tokens[Role.PROVIDER]}"}
        )
        site = provider.post(
            "/v1/sites", json={"name": "this machine", "province": "上海", "pue": 1.3}
        ).json()["id"]
        cores = os.cpu_count() or 1
        pool = provider.post(
            "/v1/pools",
            json={
                "site_id": site,
                "device": "cpu",
                "count": cores,
                "price_fen_per_device_hour": DEMO_PRICE_FEN,
            },
        ).json()["id"]
        print(f"provider site {site} with {cores} CPU core(s) in pool {pool}", file=sys.stderr)
        # the agent acts with a token for this one site only, never the provider's own
        agent_token = provider.post(
            f"/v1/sites/{site}/agent-tokens", json={"name": "demo agent"}
        ).json()["token"]
        children.append(
            subprocess.Popen(
                [
                    *SUANLI,
                    "agent",
                    "--server",
                    url,
                    "--site",
                    site,
                    "--slots",
                    str(cores),
                    "--work-root",
                    str(HOME / "work"),
                ],
                env={**env, "SUANLI_TOKEN": agent_token},  # never on argv
                stdout=log_file("agent.log"),
                stderr=subprocess.STDOUT,
            )
        )
        consumer_env = {**env, "SUANLI_SERVER": url, "SUANLI_TOKEN": tokens[Role.CONSUMER]}
        for command in COMMANDS:
            subprocess.run(
                [*SUANLI, "submit", "--duration", DEMO_DURATION_S, "--", *command],
                env=consumer_env,
                check=True,
            )
        consumer = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {tokens[Role.CONSUMER]}"}
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = [t["state"] for t in consumer.get("/v1/tasks").json()]
            if all(s in {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"} for s in states):
                break
            time.sleep(0.3)
        subprocess.run([*SUANLI, "tasks"], env=consumer_env, check=False)
        for task in reversed(consumer.get("/v1/tasks").json()):
            logs = consumer.get(f"/v1/tasks/{task['id']}/logs").json()
            output = (logs["stdout_tail"] + logs["stderr_tail"]).strip()
            print(f"{task['id']} {task['state']} (exit {task['exit_code']}): {output}")
        # every task was an order: held at placement, settled at its end (hold + settle = charge)
        wallet = f"wallet:{consumer_id}"
        lines = consumer.get("/v1/statement", params={"account": wallet}).json()["lines"]
        charges: dict[str, int] = {}
        for line in lines:
            if line["order"]:
                charges[line["order"]] = charges.get(line["order"], 0) - line["amount"]["fen"]
        for order, fen in charges.items():
            print(f"order {order}: charged {fen} fen ({yuan(fen)}) / 订单扣费")
        left = lines[-1]["balance"]["fen"] if lines else DEMO_TOPUP_FEN
        print(
            f"wallet {wallet}: {DEMO_TOPUP_FEN} fen topped up, {sum(charges.values())} fen spent, "
            f"{left} fen left ({yuan(left)}) / 钱包余额"
        )
        print(f"""
The server is running at {url} (API docs at {url}/docs, metrics at {url}/metrics).
Web console / 网页控制台: {url}/console (sign in with a token below / 用下方令牌登录)
服务正在运行。Try it / 试试看:
  export SUANLI_SERVER={url}
  export SUANLI_TOKEN={tokens[Role.CONSUMER]}
  .venv/bin/suanli submit --wait -- echo hello
  .venv/bin/suanli tasks
Provider token / 提供方令牌: {tokens[Role.PROVIDER]}
Operator token / 运营方令牌: {tokens[Role.OPERATOR]}
Logs in {HOME}. Press Ctrl-C to stop / 按 Ctrl-C 停止.""")
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("a platform process exited; see the logs", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main())
