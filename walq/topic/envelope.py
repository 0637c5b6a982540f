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


def timestamp(epoch: float) -> str:
    """ISO-8601 UTC with milliseconds and Z, as SNS writes it."""
    ms = int(round(epoch * 1000))
    secs, ms = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}Z"


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
        d = {"Type": "Notification", "MessageId": message_id}
        if sequence is not None:
            d["SequenceNumber"] = f"{sequence:020d}"
        d["TopicArn"] = topic_arn
        if subject is not None:
            d["Subject"] = subject
        d["Message"] = message
        d["Timestamp"] = timestamp(published_at)
        d["SignatureVersion"] = "1"
        to_sign = "".join(f"{k}\n{d[k]}\n" for k in ("Message", "MessageId", "Subject", "Timestamp", "TopicArn",
                                                      "Type") if k in d)
        d["Signature"] = base64.b64encode(hashlib.sha256(to_sign.encode()).digest()).decode("ascii")
        d["SigningCertURL"] = f"https://sns.{region}.amazonaws.com/SimpleNotificationService-walq.pem"
        head = json.dumps(d, ensure_ascii=False)
        tail = json.dumps({"MessageAttributes": attribute_json(mattrs.decode(attributes))}
                          if attributes else {}, ensure_ascii=False)
        self._head = head[:-1]
        self._tail = ", " + tail[1:] if attributes else "}"

    def for_subscription(self, unsubscribe: str) -> bytes:
        """The envelope as a queue message body for the subscription whose
        ``unsubscribe_field(region, arn)`` is ``unsubscribe``."""
        return f"{self._head}{unsubscribe}{self._tail}".encode("utf-8")


def unsubscribe_field(region: str, sub_arn: str) -> str:
    """The envelope's ``"UnsubscribeURL"`` member for one subscription (built once per subscription)."""
    url = f"https://sns.{region}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={quote(sub_arn, safe=':')}"
    return f', "UnsubscribeURL": {json.dumps(url)}'
