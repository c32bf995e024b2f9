"""The one place boto3 clients are built, with timeouts and retries chosen per caller.

boto3 is imported inside :func:`client`, never at import time: most Lambda invocations never
touch AWS (only the dead-letter path does), and importing boto3 costs about a quarter of a
second of cold start. Endpoints and regions come from boto3's own variables
(``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_DYNAMODB``, ``AWS_DEFAULT_REGION``, ...).
"""

from __future__ import annotations

from typing import Any

#: Seconds to wait for a connection: an unreachable endpoint fails fast instead of for minutes.
CONNECT_TIMEOUT = 3.0
#: Seconds to wait for an answer.
READ_TIMEOUT = 30.0
#: Attempts per call, the first included (botocore's ``standard`` retry mode).
MAX_ATTEMPTS = 5


def client(
    service: str,
    region: str | None = None,
    *,
    read_timeout: float = READ_TIMEOUT,
    max_attempts: int = MAX_ATTEMPTS,
    adaptive: bool = False,
) -> Any:
    """A boto3 client for ``service``; ``region`` overrides the configured one.

    ``adaptive`` selects botocore's adaptive retry mode, which also slows the caller down on
    throttling (what a table scan wants); the others retry in ``standard`` mode."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        retries={"max_attempts": max_attempts, "mode": "adaptive" if adaptive else "standard"},
    )
    if region:
        return boto3.client(service, region_name=region, config=config)
    return boto3.client(service, config=config)


def credentials() -> Any:
    """The current credentials of boto3's chain (environment, profile, the Lambda role), or None."""
    import boto3

    return boto3.Session().get_credentials()
