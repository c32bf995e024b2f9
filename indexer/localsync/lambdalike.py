"""What Lambda provides around a function, for local sync: the function found by name, the
context it is invoked with, and the on-failure destination discarded batches are reported to.
"""

from __future__ import annotations

import importlib
import json
import time
import uuid
from typing import Any, Callable

from ..errors import RetryableError, SettingsError

Handler = Callable[[dict[str, Any], Any], Any]


class InvocationContext:
    """The Lambda context the handler sees: its name and ARN, and the time it has left."""

    def __init__(self, function_name: str, function_arn: str, timeout: float) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = function_arn
        self.memory_limit_in_mb = 1024
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self._deadline - time.monotonic()) * 1000), 0)


def load_handler(path: str) -> Handler:
    """The function named ``module:function``; errors name ``--handler``."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise SettingsError(f"--handler must look like module:function, got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SettingsError(f"--handler {path}: cannot import {module_name} ({exc})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise SettingsError(f"--handler {path}: {module_name} has no function {attribute!r}")
    return function  # type: ignore[no-any-return]


def check_indexer_settings() -> None:
    """Fail fast on what would make every invocation of the project's handler fail: a missing
    setting, or a search cluster that does not answer (asked through the handler's own adapters)."""
    from ..backends import check_cluster
    from ..handler import build_pipeline
    from ..settings import Settings

    settings = Settings.from_env(require=("DLQ_URL",))
    check_cluster(build_pipeline(settings).store, settings.elasticsearch_url)


class OnFailureQueue:
    """The on-failure destination: one SQS message per discarded batch."""

    def __init__(self, queue_url: str, client: Any) -> None:
        self.queue_url = queue_url
        self.client = client

    def send(self, message: dict[str, Any]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(message))
        except (BotoCoreError, ClientError) as exc:
            raise RetryableError(f"on-failure queue {self.queue_url} did not take the message: {exc}") from None
