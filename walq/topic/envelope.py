"""SNS's JSON envelope around a published message ("Type": "Notification").

walq does not sign: ``Signature`` is present, as SNS's clients expect the
key, but holds the base64 SHA-256 of the text SNS would sign, which no
certificate verifies; ``SigningCertURL`` names SNS's certificate path for the
store's region.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from urllib.parse import quote

from walq.queue import message_attributes as mattrs

#: JSON string literal of a str (the C encoder json.dumps itself uses).
_quote = json.encoder.encode_basestring


#: (second, its text): publishes come many to a second.  Replaced whole,
#: never changed in place, so that threads need no lock.
_last_second: tuple = (None, "")


def timestamp(epoch: float) -> str:
    """ISO-8601 UTC with milliseconds and Z, as SNS writes it."""
    global _last_second
    ms = int(round(epoch * 1000))
    secs, ms = divmod(ms, 1000)
    last = _last_second
    if last[0] != secs:
        last = _last_second = (secs, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)))
    return f"{last[1]}.{ms:03d}Z"


def attribute_json(attrs: dict) -> dict:
    """``{"name": {"Type": "String"|"Number"|"Binary", "Value": "..."}}``."""
    out = {}
    for name, value in attrs.items():
        if isinstance(value, str):
            out[name] = {"Type": "String", "Value": value}
        elif isinstance(value, bytes):
            out[name] = {"Type": "Binary", "Value": base64.b64encode(value).decode("ascii")}
        else:
            out[name] = {"Type": "Number", "Value": repr(value) if isinstance(value, float) else str(value)}
    return out


class Envelope:
    """One publish's envelope, built once; ``for_subscription`` adds the
    subscription's own ``UnsubscribeURL``."""

    __slots__ = ("_head", "_tail")

    def __init__(self, *, message_id: str, topic_arn: str, region: str, message: str, published_at: float,
                 subject: str | None, attributes: bytes, sequence: int | None):
        # Written member by member (json.dumps of a dict cost a third of a
        # one-queue publish); the order is SNS's.  Only the message and the
        # subject need escaping: the other values are ASCII without quotes.
        stamp = timestamp(published_at)
        to_sign = f"Message\n{message}\nMessageId\n{message_id}\n"
        if subject is not None:
            to_sign += f"Subject\n{subject}\n"
        to_sign += f"Timestamp\n{stamp}\nTopicArn\n{topic_arn}\nType\nNotification\n"
        signature = base64.b64encode(hashlib.sha256(to_sign.encode()).digest()).decode("ascii")
        parts = ['{"Type": "Notification", "MessageId": "', message_id, '"']
        if sequence is not None:
            parts.append(f', "SequenceNumber": "{sequence:020d}"')
        parts += [', "TopicArn": "', topic_arn, '"']
        if subject is not None:
            parts += [', "Subject": ', _quote(subject)]
        parts += [', "Message": ', _quote(message), ', "Timestamp": "', stamp,
                  '", "SignatureVersion": "1", "Signature": "', signature,
                  f'", "SigningCertURL": "https://sns.{region}.amazonaws.com/SimpleNotificationService-walq.pem"']
        self._head = "".join(parts)
        if attributes:
            members = json.dumps(attribute_json(mattrs.decode(attributes)), ensure_ascii=False)
            self._tail = f', "MessageAttributes": {members}}}'
        else:
            self._tail = "}"

    def parts(self) -> tuple[bytes, bytes]:
        """The UTF-8 bytes before and after the ``UnsubscribeURL`` member
        (for the native fan-out: walq/topic/copyplan.py)."""
        return self._head.encode("utf-8"), self._tail.encode("utf-8")

    def for_subscription(self, unsubscribe: str) -> bytes:
        """The envelope as a queue message body for the subscription whose
        ``unsubscribe_field(region, arn)`` is ``unsubscribe``."""
        return f"{self._head}{unsubscribe}{self._tail}".encode("utf-8")


def unsubscribe_field(region: str, sub_arn: str) -> str:
    """The envelope's ``"UnsubscribeURL"`` member for one subscription (built once per subscription)."""
    url = f"https://sns.{region}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={quote(sub_arn, safe=':')}"
    return f', "UnsubscribeURL": {json.dumps(url)}'
