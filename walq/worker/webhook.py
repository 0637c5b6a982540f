"""HTTP(S) deliveries: one POST per notification, as SNS sends it.

The worker keeps one ``httpx.Client`` (connection pooling, keep-alive) for
all its HTTP targets.  Timeout (``HTTP_TIMEOUT_S``, 15 s by default,
``Worker(http_timeout=...)``): connecting may take at most 5 s (or the
timeout, if shorter), and sending the request or waiting for the server's
next bytes at most the timeout each; a request that runs out counts as a
failed attempt (``ERROR_CODE`` ``Timeout``).
"""

from __future__ import annotations

__all__ = ["HTTP_TIMEOUT_S", "new_client", "post", "DeliveryFailed"]

HTTP_TIMEOUT_S = 15.0
_CONNECT_S = 5.0


class DeliveryFailed(Exception):
    """One failed attempt: ``code`` and ``message`` become the dead letter's
    ``ERROR_CODE`` and ``ERROR_MESSAGE`` if it is the last."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def new_client(timeout: float = HTTP_TIMEOUT_S):
    """The worker's HTTP client (httpx is imported only by workers)."""
    import httpx

    from walq import __version__

    return httpx.Client(
        timeout=httpx.Timeout(timeout, connect=min(_CONNECT_S, timeout)),
        follow_redirects=False,  # SNS does not follow them: a 3xx is a failure
        headers={"User-Agent": f"walq/{__version__} (SNS-compatible notifications)"},
    )


def post(client, url: str, body: bytes, headers: dict[str, str]) -> None:
    """POSTs one notification; returns on a 2xx, raises DeliveryFailed otherwise."""
    import httpx

    try:
        resp = client.post(url, content=body, headers=headers)
    except httpx.TimeoutException as exc:
        raise DeliveryFailed("Timeout", f"{url}: no answer in time ({type(exc).__name__})") from None
    except httpx.ConnectError as exc:
        raise DeliveryFailed("ConnectionError", f"{url}: {exc}") from None
    except httpx.InvalidURL as exc:
        raise DeliveryFailed("InvalidURL", f"{url}: {exc}") from None
    except (httpx.HTTPError, httpx.StreamError) as exc:
        raise DeliveryFailed("HttpError", f"{url}: {type(exc).__name__}: {exc}") from None
    if not 200 <= resp.status_code < 300:
        raise DeliveryFailed(str(resp.status_code),
                             f"{url} answered {resp.status_code} {resp.reason_phrase}".rstrip())
