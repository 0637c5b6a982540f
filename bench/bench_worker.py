"""Worker throughput: handler and HTTP deliveries per second, and a queue handler.

    python bench/bench_worker.py [--n 20000] [--http-n 3000] [--durability always] [--dir DIR] [--json OUT]

Each scenario fills a queue first, starts the worker processes (each a
``walq.Worker(concurrency=4)``), waits until every one is ready, releases them
together and times until the queue is empty:

- handler deliveries: a DeliveryTarget of kind "handler" (a no-op function)
  over a queue of SNS envelopes, with 1 and with 4 worker processes;
- HTTP deliveries: the same with kind "http", POSTing to a local
  ``http.server`` (ThreadingHTTPServer, answering 200) in its own process;
- queue handler: ``Worker.consume`` with a no-op handler, batches of 10.

Deliveries/s = messages / (time the queue took to empty).  Scratch stores go
under ``--dir`` (default: a temporary directory) and are removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
TOPIC_ARN = "arn:aws:sns:us-east-1:000000000000:bench"
SUB_ARN = TOPIC_ARN + ":00000000-0000-4000-8000-000000000000"


def noop(_arg):
    """The benchmarked handler (a subscription's or a queue's)."""


def _envelope(i: int) -> str:
    return json.dumps({"Type": "Notification", "MessageId": f"m-{i}", "TopicArn": TOPIC_ARN,
                       "Message": f"message {i}", "Timestamp": "2026-01-01T00:00:00.000Z",
                       "MessageAttributes": {}, "SignatureVersion": "1", "Signature": "",
                       "SigningCertURL": "", "UnsubscribeURL": ""})


# -- processes ------------------------------------------------------------------------


def _worker_main(args: dict) -> None:
    sys.path.insert(0, ROOT)
    import walq
    from walq.worker.targets import DeliveryTarget

    with walq.open(args["data"], durability=args["durability"]) as broker:
        q = broker.get_queue("bench")
        w = walq.Worker(broker, concurrency=4)
        if args["kind"] == "queue":
            w.consume(q, noop, batch_size=10)
        else:
            t = DeliveryTarget(key=SUB_ARN, queue=q, kind=args["kind"], endpoint=args["endpoint"], raw=False,
                               retry=walq.RetryPolicy(), dead_letter=None, topic_arn=TOPIC_ARN)
            broker._delivery_targets = lambda: [t]
        open(args["ready"], "w").close()
        while not os.path.exists(args["go"]):
            time.sleep(0.001)
        w.run()


def _server_main(args: dict) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    with open(args["port_file"] + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(args["port_file"] + ".tmp", args["port_file"])
    srv.serve_forever()


def _spawn(role: str, args: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, HERE, role, json.dumps(args)])


def _wait_for(path: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path}")
        time.sleep(0.005)


# -- scenarios ------------------------------------------------------------------------------


def run_scenario(base: str, name: str, kind: str, n: int, procs: int, durability: str,
                 endpoint: str = "") -> dict:
    sys.path.insert(0, ROOT)
    import walq

    work = tempfile.mkdtemp(prefix=f"{name}-", dir=base)
    data = os.path.join(work, "data")
    with walq.open(data, durability=durability) as broker:
        q = broker.create_queue("bench", visibility_timeout=60)
        bodies = [(_envelope(i) if kind != "queue" else f"job {i}") for i in range(n)]
        for i in range(0, n, 500):
            q.send_batch(bodies[i:i + 500])
        go = os.path.join(work, "go")
        workers = [_spawn("_worker", {"data": data, "durability": durability, "kind": kind, "endpoint": endpoint,
                                      "ready": os.path.join(work, f"ready-{k}"), "go": go})
                   for k in range(procs)]
        try:
            for k in range(procs):
                _wait_for(os.path.join(work, f"ready-{k}"))
            load = os.getloadavg()[0]
            cpu0 = os.times()
            open(go, "w").close()
            t0 = time.perf_counter()
            while q.stats().total:
                time.sleep(0.005)
            elapsed = time.perf_counter() - t0
            cpu1 = os.times()
        finally:
            for p in workers:
                p.send_signal(signal.SIGTERM)
            for p in workers:
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
        from walq.worker import counters

        delivered = counters.read(broker, SUB_ARN).delivered if kind != "queue" else n
    shutil.rmtree(work, ignore_errors=True)
    return {"scenario": name, "kind": kind, "processes": procs, "concurrency": 4, "durability": durability,
            "messages": n, "seconds": round(elapsed, 3), "per_s": round(n / elapsed),
            "counted_delivered": delivered, "load_before": round(load, 2),
            "bench_cpu_s": round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="messages per handler/queue scenario")
    ap.add_argument("--http-n", type=int, default=3000, help="messages in the HTTP scenario")
    ap.add_argument("--durability", choices=["always", "batch", "os"], default="always")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--json", default=None, help="write the rows here too")
    a = ap.parse_args()
    base = tempfile.mkdtemp(prefix="walq-bench-worker-", dir=a.dir)
    rows = []
    server = None
    try:
        for procs in (1, 4):
            rows.append(run_scenario(base, f"handler-{procs}p", "handler", a.n, procs, a.durability,
                                     endpoint="bench_worker:noop"))
        port_file = os.path.join(base, "port")
        server = _spawn("_server", {"port_file": port_file})
        _wait_for(port_file)
        url = f"http://127.0.0.1:{open(port_file).read()}/hook"
        rows.append(run_scenario(base, "http-1p", "http", a.http_n, 1, a.durability, endpoint=url))
        rows.append(run_scenario(base, "queue-1p", "queue", a.n, 1, a.durability))
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        shutil.rmtree(base, ignore_errors=True)
    print(f"{'scenario':<12} {'procs':>5} {'messages':>8} {'seconds':>8} {'per s':>8} {'counted':>8} {'load':>5}")
    for r in rows:
        print(f"{r['scenario']:<12} {r['processes']:>5} {r['messages']:>8} {r['seconds']:>8} {r['per_s']:>8} "
              f"{r['counted_delivered']:>8} {r['load_before']:>5}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_worker":
        _worker_main(json.loads(sys.argv[2]))
    elif len(sys.argv) > 2 and sys.argv[1] == "_server":
        _server_main(json.loads(sys.argv[2]))
    else:
        main()
