"""The delivery engine: one batch of pending deliveries of one target.

Each message of ``target.queue`` is one notification (its body the SNS
envelope).  An attempt that succeeds deletes it.  One that fails is counted
and either waits ``retry.delay(n)`` seconds - the message's lease is set to
end then (change_visibility), so the wait is measured on the broker's clock
and survives the worker's death - or, after ``max_retries`` retries or once
the notification is ``max_age`` old, goes to the target's dead-letter queue
(or is dropped when there is none) and is deleted.

Dead letters carry the envelope as body and two attributes:

- ``ERROR_CODE``: the HTTP status (``"500"``), ``Timeout``,
  ``ConnectionError``, ``InvalidURL`` or ``HttpError`` for HTTP;
  the exception's class name (``"ValueError"``) for a handler, or
  ``HandlerNotFound`` when it cannot be imported; ``InvalidEnvelope`` for a
  pending delivery that is not an SNS envelope (never retried).
- ``ERROR_MESSAGE``: one line saying what happened (at most 1,000 characters).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from walq.errors import InvalidParameter, MessageNotInflight, QueueDoesNotExist
from walq.worker.handlers import resolve
from walq.worker.notification import EnvelopeError, from_envelope, parse_envelope
from walq.worker.webhook import DeliveryFailed, post

__all__ = ["Deliverer", "MAX_ERROR_MESSAGE"]

log = logging.getLogger("walq.worker")

MAX_ERROR_MESSAGE = 1_000


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_ERROR_MESSAGE else text[:MAX_ERROR_MESSAGE - 3] + "..."


class Deliverer:
    """Delivers batches of any target; shared by a worker's threads."""

    def __init__(self, clock: Callable[[], float], tally, http_client_factory):
        self._clock = clock
        self._tally = tally
        self._client_factory = http_client_factory
        self._client = None
        self._client_mu = threading.Lock()
        self._handlers: dict[str, Callable] = {}

    # -- one attempt ------------------------------------------------------------

    def _http(self, target, env: dict, body: bytes) -> None:
        if self._client is None:
            with self._client_mu:  # one client, shared by the worker's threads
                if self._client is None:
                    self._client = self._client_factory()
        headers = {
            "x-amz-sns-message-type": "Notification",
            "x-amz-sns-message-id": env["MessageId"],
            "x-amz-sns-topic-arn": env["TopicArn"],
            "x-amz-sns-subscription-arn": target.key,
            "Content-Type": "text/plain; charset=UTF-8",
        }
        if target.raw:
            headers["x-amz-sns-rawdelivery"] = "true"
            body = env["Message"].encode("utf-8")
        post(self._client, target.endpoint, body, headers)

    def _handler(self, target, env: dict, m) -> None:
        func = self._handlers.get(target.endpoint)
        if func is None:
            try:
                func = resolve(target.endpoint)
            except InvalidParameter as exc:
                raise DeliveryFailed("HandlerNotFound", str(exc)) from None
            self._handlers[target.endpoint] = func
        note = from_envelope(env, group=m.group, receive_count=m.receive_count)
        try:
            func(note)
        except Exception as exc:
            raise DeliveryFailed(type(exc).__name__, str(exc) or type(exc).__name__) from None

    def attempt(self, target, env: dict, m) -> None:
        """Delivers one notification once; DeliveryFailed if it failed,
        EnvelopeError if the envelope cannot make a Notification."""
        if target.kind == "handler":
            self._handler(target, env, m)
        elif target.kind in ("http", "https"):
            self._http(target, env, m.body)
        else:
            raise DeliveryFailed("InvalidEndpoint", f"unknown endpoint kind {target.kind!r}")

    def _attempt_event(self, target, m) -> None:
        """Delivers one event bus delivery once: a handler gets the event
        (the parsed JSON; text that is not JSON as a str), an HTTP endpoint a
        POST of the body."""
        if target.kind == "handler":
            func = self._handlers.get(target.endpoint)
            if func is None:
                try:
                    func = resolve(target.endpoint)
                except InvalidParameter as exc:
                    raise DeliveryFailed("HandlerNotFound", str(exc)) from None
                self._handlers[target.endpoint] = func
            text = m.body.decode("utf-8")
            try:
                event = json.loads(text)
            except ValueError:
                event = text  # an input transformer's plain-text output
            try:
                func(event)
            except Exception as exc:
                raise DeliveryFailed(type(exc).__name__, str(exc) or type(exc).__name__) from None
        elif target.kind in ("http", "https"):
            if self._client is None:
                with self._client_mu:
                    if self._client is None:
                        self._client = self._client_factory()
            post(self._client, target.endpoint, m.body, {"Content-Type": "application/json; charset=UTF-8"})
        else:
            raise DeliveryFailed("InvalidEndpoint", f"unknown endpoint kind {target.kind!r}")

    # -- a batch ----------------------------------------------------------------

    def deliver(self, target, messages: list) -> None:
        """Attempts each message of a batch received from ``target.queue``.

        On a FIFO queue, once a message of a group fails, the batch's later
        messages of that group are not attempted: they are made visible again
        and come back after it, in order.
        """
        q = target.queue
        done: list[str] = []
        blocked: set[str] = set()
        skipped: list[str] = []
        delivered = 0
        for m in messages:
            if m.group is not None and m.group in blocked:
                skipped.append(m.receipt)
                continue
            try:
                if target.rule_arn is not None:
                    env = {"MessageId": m.message_id}
                    self._attempt_event(target, m)
                else:
                    env = parse_envelope(m.body)
                    self.attempt(target, env, m)
            except EnvelopeError as exc:
                log.error("%s: pending delivery %s is not an SNS envelope: %s", target.key, m.message_id, exc)
                self._give_up(target, m, DeliveryFailed("InvalidEnvelope", str(exc)))
                continue
            except DeliveryFailed as failure:
                self._tally.count(target.key, failed=1)
                log.info("%s: delivery of %s failed (attempt %d): %s", target.key, env["MessageId"],
                         m.receive_count, failure)
                if m.group is not None:
                    blocked.add(m.group)
                self._after_failure(target, m, failure)
                continue
            done.append(m.receipt)
            delivered += 1
        if done:
            self._tally.count(target.key, delivered=delivered)  # delivered, whether the delete lands or not
            q.delete_batch(done)
        if skipped:
            res = q.change_visibility_batch([(r, 0) for r in skipped])
            if res.failed:
                log.warning("%s: %d skipped message(s) had lost their lease", target.key, len(res.failed))

    def _after_failure(self, target, m, failure: DeliveryFailed) -> None:
        retries_done = m.receive_count - 1
        policy = target.retry
        if retries_done >= policy.max_retries or self._clock() - m.sent_at >= policy.max_age:
            self._give_up(target, m, failure)
            return
        try:
            target.queue.change_visibility(m.receipt, policy.delay(retries_done + 1))
        except MessageNotInflight:
            pass  # the lease ran out meanwhile: it comes back anyway

    def _give_up(self, target, m, failure: DeliveryFailed) -> None:
        """Sends ``m`` to the dead-letter queue (or drops it) and deletes it."""
        dlq = target.dead_letter
        sent = False
        if dlq is not None:
            attrs = {"ERROR_CODE": failure.code, "ERROR_MESSAGE": _one_line(failure.message)}
            if target.rule_arn is not None:  # EventBridge's dead-letter attributes
                attrs.update(RULE_ARN=target.rule_arn, TARGET_ARN=target.endpoint)
            kw = {}
            if dlq.attributes.fifo:
                kw = {"group": m.group or "default", "dedup_id": m.message_id}
            try:
                dlq.send(m.body, attributes=attrs, **kw)
                sent = True
            except (QueueDoesNotExist, InvalidParameter) as exc:
                log.error("%s: could not dead-letter %s to %s: %s", target.key, m.message_id, dlq.name, exc)
        if sent:
            self._tally.count(target.key, dead_lettered=1)
        else:
            self._tally.count(target.key, dropped=1)
            log.warning("%s: dropped %s after %d attempt(s): %s", target.key, m.message_id,
                        m.receive_count, failure)
        target.queue.delete(m.receipt)

    def close(self) -> None:
        """Closes the HTTP client."""
        if self._client is not None:
            self._client.close()
            self._client = None
