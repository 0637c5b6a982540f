"""Shared pieces of the worker tests: running a Worker in a thread, SNS
envelopes and DeliveryTargets over plain queues, a local HTTP endpoint, and
the handlers that ``walq worker`` subprocesses import (this directory is on
their PYTHONPATH).

Handlers in subprocesses report through journals (one ``os.write`` per line,
as in queue_helpers) named by the ``WORKER_JOURNAL`` environment variable,
with ``{pid}`` replaced by the process id; ``WORKER_GATE`` names a file a
blocking handler waits for.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import walq
from walq.worker.targets import DeliveryTarget

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOPIC_ARN = "arn:aws:sns:us-east-1:000000000000:orders"
SUB_ARN = TOPIC_ARN + ":3f1c2a9e-0000-4000-8000-000000000001"


def wait_until(pred, timeout: float = 60.0, what: str = "condition") -> None:
    """Polls ``pred`` until true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def running(worker):
    """Runs ``worker.run(stop)`` in a thread; stops and joins it on exit."""
    stop = threading.Event()
    failure = []

    def main():
        try:
            worker.run(stop)
        except BaseException as exc:  # surfaced by the test below
            failure.append(exc)

    t = threading.Thread(target=main, daemon=True)
    t.start()
    wait_until(lambda: worker.leases is not None or failure, what="the worker to start")
    try:
        yield worker
    finally:
        stop.set()
        t.join(60)
        assert not t.is_alive(), "worker did not stop"
    if failure:
        raise failure[0]


def envelope(message: str, *, message_id: str | None = None, subject: str | None = None,
             attributes: dict | None = None, timestamp: str = "2023-11-14T22:13:20.000Z",
             topic_arn: str = TOPIC_ARN, sequence: int | None = None) -> dict:
    """An SNS notification envelope, as the topics send them."""
    env = {"Type": "Notification", "MessageId": message_id or str(uuid.uuid4()), "TopicArn": topic_arn}
    if subject is not None:
        env["Subject"] = subject
    env.update({
        "Message": message,
        "Timestamp": timestamp,
        "MessageAttributes": attributes or {},
        "SignatureVersion": "1",
        "Signature": "",
        "SigningCertURL": "",
        "UnsubscribeURL": "",
    })
    if sequence is not None:
        env["SequenceNumber"] = str(sequence)
    return env


def target(broker, queue, kind: str, endpoint: str, *, raw: bool = False, retry=None, dead_letter=None,
           key: str = SUB_ARN) -> DeliveryTarget:
    """A DeliveryTarget over an ordinary queue, listed by the broker's
    ``_delivery_targets()`` (as a topic's subscription would be)."""
    t = DeliveryTarget(key=key, queue=queue, kind=kind, endpoint=endpoint, raw=raw,
                       retry=retry or walq.RetryPolicy(), dead_letter=dead_letter, topic_arn=TOPIC_ARN)
    listed = getattr(broker, "_test_targets", None)
    if listed is None:
        listed = broker._test_targets = []
        broker._delivery_targets = lambda: list(listed)
    listed.append(t)
    return t


# -- a local HTTP endpoint ---------------------------------------------------------------


class Endpoint:
    """An HTTP server on 127.0.0.1 that records each request and answers as
    scripted: ``script`` holds statuses (ints) or ``"hang"`` (no answer until
    the endpoint closes); when it is empty, 200."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: deque = deque()
        self.released = threading.Event()
        self._mu = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer._mu:
                    outer.requests.append({"path": self.path, "headers": dict(self.headers.items()),
                                           "body": body, "peer": self.client_address})
                    action = outer.script.popleft() if outer.script else 200
                if action == "hang":
                    outer.released.wait(60)
                    return
                self.send_response(action)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self) -> int:
        """Requests received so far."""
        with self._mu:
            return len(self.requests)

    def close(self) -> None:
        """Stops the server and frees hanging requests."""
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/hook"


# -- handlers, and the processes that run them -----------------------------------------------


def _journal(*fields) -> None:
    path = os.environ["WORKER_JOURNAL"].replace("{pid}", str(os.getpid()))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join(str(f) for f in fields) + "\n").encode())
    finally:
        os.close(fd)


def _wait_gate() -> None:
    gate = os.environ["WORKER_GATE"]
    deadline = time.monotonic() + 120
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)


def journal_batch(messages):
    """Queue handler: journals each message, acks all."""
    for m in messages:
        _journal("got", m.message_id, m.receive_count, m.text)


def slow_journal_batch(messages):
    """Queue handler: journals each message, takes 0.2 s, acks all (so that
    kills land mid-batch)."""
    for m in messages:
        _journal("got", m.message_id, m.receive_count, m.text)
    time.sleep(0.2)


def gated_batch(messages):
    """Queue handler: journals "start", waits for the gate file, journals "end"."""
    _journal("start", *[m.message_id for m in messages])
    _wait_gate()
    _journal("end", *[m.message_id for m in messages])


def gated_once(messages):
    """Queue handler: on a first receive, journals "start" and waits for the
    gate; otherwise journals each message as "got" and acks."""
    if any(m.receive_count == 1 for m in messages):
        _journal("start", *[m.message_id for m in messages])
        _wait_gate()
    for m in messages:
        _journal("got", m.message_id, m.receive_count)


def note_gated_once(note):
    """Handler subscription: on the first attempt journals "start" and waits
    for the gate (a kill -9 ends it); later attempts journal "got"."""
    if note.receive_count == 1:
        _journal("start", note.message_id)
        _wait_gate()
    _journal("got", note.message_id, note.receive_count)


def note_fails(note):
    """Handler subscription that always fails."""
    raise ValueError(f"cannot handle {note.message}")


def read_journal(path: str) -> list[list[str]]:
    """The complete lines of a journal, split into fields."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split() for line in f.read().splitlines() if line]


def read_journals(pattern_dir: str, prefix: str) -> list[list[str]]:
    """Every journal in ``pattern_dir`` whose name starts with ``prefix``, concatenated."""
    out = []
    for name in sorted(os.listdir(pattern_dir)):
        if name.startswith(prefix):
            out.extend(read_journal(os.path.join(pattern_dir, name)))
    return out


def env_for(journal: str, gate: str | None = None) -> dict:
    """The environment of a worker subprocess: this tree and this directory importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, HERE, env.get("PYTHONPATH", "")])
    env["WORKER_JOURNAL"] = journal
    if gate:
        env["WORKER_GATE"] = gate
    return env


def spawn_cli(data: str, *args, journal: str, gate: str | None = None) -> subprocess.Popen:
    """Starts ``walq worker --data DATA ARGS...``; stderr is a pipe."""
    return subprocess.Popen([sys.executable, "-m", "walq", "worker", "--data", data, *args],
                            env=env_for(journal, gate), stderr=subprocess.PIPE, text=True)


def spawn_delivery(data: str, queue: str, endpoint: str, *, journal: str, gate: str | None = None,
                   visibility: int = 30) -> subprocess.Popen:
    """Starts a process whose Worker delivers ``queue`` as a handler target."""
    args = json.dumps({"data": data, "queue": queue, "endpoint": endpoint})
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "deliver", args],
                            env=env_for(journal, gate))


def _deliver_main(args: dict) -> None:
    with walq.open(args["data"]) as broker:
        q = broker.get_queue(args["queue"])
        target(broker, q, "handler", args["endpoint"])
        walq.Worker(broker, concurrency=2).run()


if __name__ == "__main__":
    if sys.argv[1] == "deliver":
        _deliver_main(json.loads(sys.argv[2]))
