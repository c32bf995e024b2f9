"""Amazon OpenSearch Service: requests leave signed with SigV4 for the configured region and
service, verifiably (the signature is recomputed here with botocore's signer), and the
credentials never reach the logs."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from structlog.testing import capture_logs

from indexer.backends import store_for
from indexer.settings import Settings

ACCESS_KEY, SECRET_KEY, TOKEN = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token-example"


class Capture(BaseHTTPRequestHandler):
    """A stand-in cluster on loopback that records what it receives."""

    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        Capture.seen.append((self.command, self.path, dict(self.headers.items()), body))
        payload = json.dumps({"status": "green", "errors": False, "items": []}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args) -> None:  # keep test output quiet
        pass


@pytest.fixture
def cluster():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Capture.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def expected_signature(method, url, headers, body, region, service) -> str:
    """botocore's signature over the headers the request says it signed (transports add some
    after signing, e.g. connection and encoding headers)."""
    signed = headers["Authorization"].split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    kept = {k: v for k, v in headers.items() if k.lower() in signed}
    # The payload hash is recomputed from the body received, so a changed body cannot verify.
    kept = {k: (hashlib.sha256(body).hexdigest() if k.lower() == "x-amz-content-sha256" else v)
            for k, v in kept.items()}
    request = AWSRequest(method=method, url=url, data=body or None, headers=kept)
    request.context["timestamp"] = headers["X-Amz-Date"]
    signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, TOKEN), service, region)
    canonical = signer.canonical_request(request)
    return signer.signature(signer.string_to_sign(request, canonical), request)


@pytest.mark.parametrize(("region", "service"), [("eu-west-1", "es"), ("us-east-2", "aoss")])
def test_requests_are_signed_for_the_configured_region_and_service(cluster, monkeypatch, region, service):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    settings = Settings.from_env({"ELASTICSEARCH_URL": cluster, "SEARCH_BACKEND": "opensearch", "SEARCH_AUTH": "sigv4",
                                  "ELASTICSEARCH_ALLOW_INSECURE": "true",
                                  "AWS_REGION": region, "SIGV4_SERVICE": service})
    store = store_for(settings)
    with capture_logs() as logs:
        store.health(5)
        store.bulk(b'{"create":{"_index":"i","_id":"a"}}\n{"v":1}\n', 5)
    assert len(Capture.seen) == 2
    for method, path, headers, body in Capture.seen:
        authorization = headers["Authorization"]
        assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
        assert f"/{region}/{service}/aws4_request" in authorization
        assert headers["X-Amz-Security-Token"] == TOKEN
        signature = authorization.rsplit("Signature=", 1)[1]
        assert signature == expected_signature(method, cluster + path, headers, body, region, service)
    assert Capture.seen[1][3].startswith(b'{"create"')  # the bulk body went out byte for byte
    assert SECRET_KEY not in json.dumps(logs) and TOKEN not in json.dumps(logs)
    assert SECRET_KEY not in repr(settings)


def test_a_tampered_request_would_not_verify(cluster, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    settings = Settings.from_env({"ELASTICSEARCH_URL": cluster, "SEARCH_BACKEND": "opensearch", "SEARCH_AUTH": "sigv4",
                                  "ELASTICSEARCH_ALLOW_INSECURE": "true",
                                  "AWS_REGION": "eu-west-1"})
    store_for(settings).bulk(b'{"v":1}\n', 5)
    method, path, headers, body = Capture.seen[0]
    signature = headers["Authorization"].rsplit("Signature=", 1)[1]
    assert signature != expected_signature(method, cluster + path, headers, b'{"v":2}\n', "eu-west-1", "es")
