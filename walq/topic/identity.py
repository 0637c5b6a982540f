"""The region and account that ARNs name (``walq.open(region=, account=)``)."""

from __future__ import annotations

import re

from walq.errors import InvalidParameter

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_ACCOUNT = re.compile(r"^\d{12}$")


def check_identity(region, account) -> tuple[str, str]:
    """``(region, account)`` if they are an AWS region name and a 12-digit
    account id; InvalidParameter otherwise."""
    if not isinstance(region, str) or not _REGION.match(region):
        raise InvalidParameter(f"region must be an AWS region name such as 'us-east-1'; got {region!r}")
    if not isinstance(account, str) or not _ACCOUNT.match(account):
        raise InvalidParameter(f"account must be 12 digits such as '000000000000'; got {account!r}")
    return region, account
