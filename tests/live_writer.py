"""A writer process for tests that verify a store while it is in use.

Usage: python live_writer.py STORE.  Creates queue "live" (16 KiB segments,
so that segments roll and are trimmed often) with a backlog of 1,500
messages across some 40 segments, then repeats a round - send a batch,
receive and delete as many of the oldest, checkpoint (which trims the
segments consumed) - and prints ``round N`` after each, until its stdin
closes.
"""

import os
import sys
import threading

import walq


def main() -> None:
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    with walq.open(sys.argv[1], segment_size=16 * 1024) as b:
        q = b.create_queue("live")
        for i in range(150):
            q.send_batch([f"backlog-{i}-{j}" + "x" * 300 for j in range(10)])
        n = 0
        while not stop.is_set():
            for _ in range(3):
                q.send_batch([f"m{n}-{i}" + "x" * 300 for i in range(10)])
                msgs = q.receive(10)
                if msgs:
                    q.delete_batch([m.receipt for m in msgs])
                q.checkpoint()
            n += 1
            try:
                print(f"round {n}", flush=True)
            except BrokenPipeError:
                break  # the test is gone
    os._exit(0)


if __name__ == "__main__":
    main()
