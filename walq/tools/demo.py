"""``walq demo``: a coffee shop, run by real processes sharing one store.

* The **order-taker** (a process) sends each order to ``coffee-orders`` as a
  JSON body with message attributes (drink, table).
* Several **baristas** (one process each) long-poll the queue, make the drink
  and ack the order.  A leased order is invisible to the other baristas; if
  a barista died, its order would come back after the visibility timeout.
* One order nobody can make (a unicorn frappuccino) is released after each
  failed attempt (visibility 0); after three receives the queue's redrive
  policy moves it to ``coffee-orders-dlq``.
* When the orders are done, this process sends one "closing time" message
  per barista and shows the dead-letter queue.

The worker processes are started as ``python -m walq.tools.demo ROLE --data DIR``
and print what they do; the parent prefixes and forwards their lines.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import walq
from walq.tools.subprocesses import module_command

PREFIX = "coffee-orders"
ORDERS = "coffee-orders"
DLQ = "coffee-orders-dlq"
MAX_RECEIVES = 3
IMPOSSIBLE = "unicorn frappuccino"
MENU = {"espresso": 0.05, "americano": 0.08, "cappuccino": 0.12, "latte": 0.12, "flat white": 0.1,
        "mocha": 0.15, "chai latte": 0.1, "cortado": 0.08}
CUSTOMERS = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hiro", "Ines", "Jo", "Kofi", "Lena",
             "Mia", "Noor", "Oskar", "Priya", "Quinn", "Rosa", "Sam", "Tariq"]
_CLOSE = "closing time"
_TIMEOUT_S = 60.0


@dataclass
class DemoResult:
    """What happened: orders made, dead letters, and whether all went to plan."""

    orders: int
    made: int
    dead_letters: list[str]
    seconds: float
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


def _open(data: str) -> walq.Broker:
    return walq.open(data)


def setup(data: str) -> None:
    """(Re)creates the demo's two queues, leaving every other queue alone."""
    with _open(data) as b:
        for name in (ORDERS, DLQ):
            if name in b.list_queues(PREFIX):
                b.delete_queue(name)
        b.create_queue(DLQ)
        b.create_queue(ORDERS, visibility_timeout=5,
                       dead_letter=walq.RedrivePolicy(DLQ, max_receives=MAX_RECEIVES))


def run(data: str, *, baristas: int = 3, orders: int = 12, seed: int | None = None, echo=print) -> DemoResult:
    """Runs the demo on the store at ``data``; ``echo`` prints each line."""
    t0 = time.monotonic()
    seed = random.randrange(1 << 30) if seed is None else seed
    setup(data)
    echo(f"coffee shop open: 1 order-taker and {baristas} barista processes share the store {data}")
    lock = threading.Lock()
    made: list[str] = []

    def forward(proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.startswith("MADE "):
                with lock:
                    made.append(line[5:])
                continue
            with lock:
                echo(line)

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = module_command("walq.tools.demo")
    procs = [subprocess.Popen(cmd + ["barista", "--data", data, "--name", str(i + 1), "--seed", str(seed + i)],
                              stdout=subprocess.PIPE, text=True, env=env) for i in range(baristas)]
    procs.append(subprocess.Popen(cmd + ["order-taker", "--data", data, "--orders", str(orders),
                                         "--seed", str(seed)], stdout=subprocess.PIPE, text=True, env=env))
    readers = [threading.Thread(target=forward, args=(p,), daemon=True) for p in procs]
    for r in readers:
        r.start()
    problem = ""
    try:
        taker = procs[-1]
        if taker.wait(timeout=_TIMEOUT_S) != 0:
            problem = f"the order-taker exited with status {taker.returncode}"
        with _open(data) as b:
            q = b.get_queue(ORDERS)
            deadline = time.monotonic() + _TIMEOUT_S
            while time.monotonic() < deadline:
                s = q.stats()
                if s.visible == s.in_flight == s.delayed == 0:
                    break
                time.sleep(0.05)
            else:
                problem = problem or "orders were still waiting after a minute"
            q.send_batch([json.dumps({"close": True}) for _ in range(baristas)])
        for p in procs[:-1]:
            if p.wait(timeout=_TIMEOUT_S) != 0 and not problem:
                problem = f"a barista exited with status {p.returncode}"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for r in readers:
            r.join(timeout=5)
    dead = []
    with _open(data) as b:
        # Look without taking: a zero visibility timeout leaves them visible.
        for m in b.get_queue(DLQ).receive(10, visibility_timeout=0):
            order = json.loads(m.body)
            dead.append(f"{order['drink']} for {order['customer']}")
            echo(f"dead-letter queue: order #{order['order']} ({order['drink']} for {order['customer']}) "
                 f"after {MAX_RECEIVES} failed attempts")
    good = orders - (1 if orders >= 3 else 0)
    if not problem and len(made) != good:
        problem = f"{len(made)} of {good} drinks were made"
    if not problem and orders >= 3 and len(dead) != 1:
        problem = f"expected 1 order in {DLQ}, found {len(dead)}"
    seconds = time.monotonic() - t0
    echo(f"done in {seconds:.1f}s: {len(made)} drinks made, {len(dead)} order in the dead-letter queue")
    return DemoResult(orders, len(made), dead, seconds, problem)


# -- the worker processes ----------------------------------------------------------------


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def order_taker(data: str, orders: int, seed: int) -> None:
    rng = random.Random(seed)
    impossible_at = min(2, orders - 1) if orders >= 3 else -1
    with _open(data) as b:
        q = b.get_queue(ORDERS)
        for i in range(1, orders + 1):
            drink = IMPOSSIBLE if i - 1 == impossible_at else rng.choice(list(MENU))
            customer = rng.choice(CUSTOMERS)
            table = rng.randint(1, 12)
            _say(f"order-taker: order #{i}: {drink} for {customer} (table {table})")
            q.send(json.dumps({"order": i, "drink": drink, "customer": customer}),
                   attributes={"drink": drink, "table": table})
            time.sleep(rng.uniform(0.02, 0.08))


def barista(data: str, name: str, seed: int) -> None:
    rng = random.Random(seed)
    me = f"barista {name}"
    made = 0
    with _open(data) as b:
        q = b.get_queue(ORDERS)
        while True:
            for m in q.receive(1, wait=1):
                order = json.loads(m.body)
                if order.get("close"):
                    m.ack()
                    _say(f"{me}: {_CLOSE}, made {made} drink{'s' if made != 1 else ''}")
                    return
                drink, customer = order["drink"], order["customer"]
                if drink == IMPOSSIBLE:
                    _say(f"{me}: nobody knows how to make a {drink} (attempt {m.receive_count} of "
                         f"{MAX_RECEIVES}); back to the queue")
                    m.change_visibility(0)
                    time.sleep(0.05)
                    continue
                time.sleep(MENU.get(drink, 0.1) * rng.uniform(0.8, 1.5))
                m.ack()
                made += 1
                _say(f"{me}: {drink} for {customer} is ready (order #{order['order']}, table "
                     f"{m.attributes['table']})")
                _say(f"MADE {order['order']}")


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m walq.tools.demo", description="walq demo worker processes")
    ap.add_argument("role", choices=["order-taker", "barista"])
    ap.add_argument("--data", required=True)
    ap.add_argument("--orders", type=int, default=12)
    ap.add_argument("--name", default="1")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.role == "order-taker":
        order_taker(args.data, args.orders, args.seed)
    else:
        barista(args.data, args.name, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
