"""Search credentials read at run time from Secrets Manager (``ELASTICSEARCH_SECRET_ARN``).

Why not resolve the secret at deploy time: the value then sits in the function's
configuration, readable by anyone with ``lambda:GetFunctionConfiguration``, and a rotated
secret needs a redeploy. Read here instead, once per container (a cold start), and once more
when the cluster answers 401: a rotation then takes effect on the next request.

The secret holds JSON, ``{"api_key": "..."}`` or ``{"username": "...", "password": "..."}``,
or the API key as plain text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from . import aws
from .errors import ClusterError


@dataclass(frozen=True)
class Credentials:
    api_key: str | None = None
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never print secrets
        return f"Credentials({'api_key' if self.api_key else 'basic'})"


#: Per container: ARN → credentials last read.
_cache: dict[str, Credentials] = {}


def credentials(arn: str, *, fresh: bool = False,
                client: Callable[[str, str | None], Any] = aws.client) -> Credentials:
    """The credentials in secret ``arn``: cached, unless ``fresh`` (after a 401)."""
    if fresh or arn not in _cache:
        _cache[arn] = parse(_secret_string(arn, client), arn)
    return _cache[arn]


def reset() -> None:
    """Forget what was read (a new container, in tests)."""
    _cache.clear()


def parse(text: str, arn: str) -> Credentials:
    """Credentials from the secret's text; ClusterError naming the secret (never its value)."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        if not stripped or any(c.isspace() for c in stripped):
            raise ClusterError(f"secret {arn} holds neither JSON nor an API key")
        return Credentials(api_key=stripped)
    try:
        body = json.loads(stripped)
    except ValueError:
        raise ClusterError(f"secret {arn} is not valid JSON") from None
    api_key, username, password = (body.get(k) if isinstance(body, dict) else None
                                   for k in ("api_key", "username", "password"))
    if isinstance(api_key, str) and api_key:
        return Credentials(api_key=api_key)
    if isinstance(username, str) and username and isinstance(password, str) and password:
        return Credentials(username=username, password=password)
    raise ClusterError(f'secret {arn} must hold {{"api_key": ...}} or {{"username": ..., "password": ...}}')


def _secret_string(arn: str, client: Callable[[str, str | None], Any]) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    region = arn.split(":")[3]
    try:
        answer = client("secretsmanager", region).get_secret_value(SecretId=arn)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise ClusterError(f"cannot read secret {arn} (ELASTICSEARCH_SECRET_ARN): {code}") from None
    except BotoCoreError as exc:
        raise ClusterError(f"cannot read secret {arn} (ELASTICSEARCH_SECRET_ARN): {type(exc).__name__}") from None
    text = answer.get("SecretString")
    if not isinstance(text, str):
        raise ClusterError(f"secret {arn} has no SecretString")
    return text
