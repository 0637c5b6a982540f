"""``walq demo``: a coffee shop, run by real processes sharing one store.

* The **order-taker** (a process) sends each order to ``coffee-orders`` as a
  JSON body with message attributes (drink, table).
* Several **baristas** (one process each) long-poll the queue, make the drink
  and ack the order.  A leased order is invisible to the other baristas.
* The first barista to start on a drink is killed with SIGKILL while it holds
  the order, and a new barista takes its place: the order comes back when its
  lease (the visibility timeout, 3 s) ends, and another barista makes it.
* One order nobody can make (a unicorn frappuccino) is released after each
  failed attempt (visibility 0); after three receives the queue's redrive
  policy moves it to ``coffee-orders-dlq``.
* When the orders are done, this process sends one "closing time" message
  per barista, shows the dead-letter queue, and checks that every order the
  order-taker confirmed was made exactly once or dead-lettered.

The worker processes are started as ``python -m walq.tools.demo ROLE --data DIR``
and print what they do; the parent prefixes and forwards their lines.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import walq
from walq.tools.subprocesses import module_command

PREFIX = "coffee-orders"
ORDERS = "coffee-orders"
DLQ = "coffee-orders-dlq"
MAX_RECEIVES = 3
VISIBILITY_TIMEOUT = 3  # seconds a killed barista's order stays leased
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
        b.create_queue(ORDERS, visibility_timeout=VISIBILITY_TIMEOUT,
                       dead_letter=walq.RedrivePolicy(DLQ, max_receives=MAX_RECEIVES))


def run(data: str, *, baristas: int = 3, orders: int = 12, seed: int | None = None, kill: bool = True,
        echo=print) -> DemoResult:
    """Runs the demo on the store at ``data``; ``echo`` prints each line.

    With ``kill``, the first barista to start on a drink is killed with
    SIGKILL while it holds the order, and a new barista takes its place: the
    order comes back when its lease ends and is made by someone else.  The
    result checks that every order the order-taker confirmed (its send
    returned) was made exactly once, or ended in the dead-letter queue.
    """
    t0 = time.monotonic()
    seed = random.randrange(1 << 30) if seed is None else seed
    setup(data)
    echo(f"coffee shop open: 1 order-taker and {baristas} barista processes share the store {data}")
    lock = threading.Lock()
    made: list[int] = []
    confirmed: list[int] = []
    victim: dict = {}
    doom = tempfile.mkdtemp(prefix="walq-demo-") if kill else None
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = module_command("walq.tools.demo")

    def forward(proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.startswith("MADE "):
                with lock:
                    made.append(int(line[5:]))
                    if victim.get("order") == int(line[5:]):
                        echo(f"*** order #{line[5:]}, which the killed barista held, was made after its lease ran out")
                continue
            if line.startswith("SENT "):
                with lock:
                    confirmed.append(int(line[5:]))
                continue
            if line.startswith("DOOMED "):
                order = int(line.split()[1])
                with lock:
                    victim.update(order=order, proc=proc)
                    proc.kill()  # SIGKILL: no cleanup, no ack, the lease still held
                    echo(f"*** kill -9 {line.split(' ', 2)[2]} while it makes order #{order}: the order stays "
                         f"leased, invisible to the others, for {VISIBILITY_TIMEOUT} s, then comes back")
                continue
            with lock:
                echo(line)

    def start(args: list[str]) -> subprocess.Popen:
        p = subprocess.Popen(cmd + args, stdout=subprocess.PIPE, text=True, env=env)
        t = threading.Thread(target=forward, args=(p,), daemon=True)
        t.start()
        readers.append(t)
        return p

    readers: list[threading.Thread] = []
    doom_args = ["--doom", os.path.join(doom, "claimed")] if doom else []
    crew = [start(["barista", "--data", data, "--name", str(i + 1), "--seed", str(seed + i), *doom_args])
            for i in range(baristas)]
    taker = start(["order-taker", "--data", data, "--orders", str(orders), "--seed", str(seed)])
    problem = ""
    try:
        if taker.wait(timeout=_TIMEOUT_S) != 0:
            problem = f"the order-taker exited with status {taker.returncode}"
        with _open(data) as b:
            q = b.get_queue(ORDERS)
            deadline = time.monotonic() + _TIMEOUT_S
            replaced = False
            while time.monotonic() < deadline:
                with lock:
                    dead = victim.get("proc")
                if dead is not None and not replaced:
                    dead.wait(timeout=_TIMEOUT_S)
                    replaced = True
                    crew.remove(dead)
                    name = str(baristas + 1)
                    echo(f"*** barista {name} starts in the killed barista's place")
                    crew.append(start(["barista", "--data", data, "--name", name, "--seed", str(seed + baristas)]))
                kill_pending = kill and _drinks(orders) and not replaced
                s = q.stats()
                if not kill_pending and s.visible == s.in_flight == s.delayed == 0:
                    break
                time.sleep(0.05)
            else:
                problem = problem or "orders were still waiting after a minute"
            q.send_batch([json.dumps({"close": True}) for _ in crew])
        for p in crew:
            if p.wait(timeout=_TIMEOUT_S) != 0 and not problem:
                problem = f"a barista exited with status {p.returncode}"
    finally:
        for p in [*crew, taker]:
            if p.poll() is None:
                p.kill()
                p.wait()
        for r in readers:
            r.join(timeout=5)
        if doom:
            shutil.rmtree(doom, ignore_errors=True)
    dead_letters = []
    with _open(data) as b:
        # Look without taking: a zero visibility timeout leaves them visible.
        for m in b.get_queue(DLQ).receive(10, visibility_timeout=0):
            order = json.loads(m.body)
            dead_letters.append(order["order"])
            echo(f"dead-letter queue: order #{order['order']} ({order['drink']} for {order['customer']}) "
                 f"after {MAX_RECEIVES} failed attempts")
    served = sorted(made + dead_letters)
    if not problem and kill and _drinks(orders) and "order" not in victim:
        problem = "no barista was killed"
    if not problem and served != sorted(confirmed):
        lost = sorted(set(confirmed) - set(served))
        twice = sorted({o for o in made if made.count(o) > 1})
        problem = f"confirmed orders lost: {lost}; made twice: {twice}"
    if not problem and len(confirmed) != orders:
        problem = f"{len(confirmed)} of {orders} orders were confirmed"
    if not problem and orders >= 3 and len(dead_letters) != 1:
        problem = f"expected 1 order in {DLQ}, found {len(dead_letters)}"
    seconds = time.monotonic() - t0
    echo(f"done in {seconds:.1f}s: {len(made)} drinks made, {len(dead_letters)} order in the dead-letter queue")
    if not problem:
        killed = f", order #{victim['order']} (held by the killed barista) included" if "order" in victim else ""
        echo(f"every one of the {len(confirmed)} confirmed orders was made exactly once or dead-lettered{killed}: "
             f"nothing lost")
    return DemoResult(orders, len(made), [str(o) for o in dead_letters], seconds, problem)


def _drinks(orders: int) -> int:
    """How many orders can be made (one is impossible from three orders on)."""
    return orders - (1 if orders >= 3 else 0)


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
            _say(f"SENT {i}")  # send returned: the order is confirmed
            time.sleep(rng.uniform(0.02, 0.08))


def barista(data: str, name: str, seed: int, doom: str | None = None) -> None:
    """Makes drinks until closing time.  ``doom``: a path that exactly one
    barista manages to create, on its first drink; that one announces it
    and stops mid-work, holding the order, until the parent kills it."""
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
                if doom and _claim(doom):
                    _say(f"DOOMED {order['order']} {me}")
                    time.sleep(_TIMEOUT_S * 10)  # mid-work, holding the lease, until SIGKILL
                time.sleep(MENU.get(drink, 0.1) * rng.uniform(0.8, 1.5))
                m.ack()
                made += 1
                _say(f"{me}: {drink} for {customer} is ready (order #{order['order']}, table "
                     f"{m.attributes['table']})")
                _say(f"MADE {order['order']}")


def _claim(path: str) -> bool:
    """True for the one process that creates ``path`` first."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m walq.tools.demo", description="walq demo worker processes")
    ap.add_argument("role", choices=["order-taker", "barista"])
    ap.add_argument("--data", required=True)
    ap.add_argument("--orders", type=int, default=12)
    ap.add_argument("--name", default="1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--doom", default=None)
    args = ap.parse_args(argv)
    if args.role == "order-taker":
        order_taker(args.data, args.orders, args.seed)
    else:
        barista(args.data, args.name, args.seed, args.doom)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
