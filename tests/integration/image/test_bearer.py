"""The registry client against a fake registry that wants Bearer tokens (as Docker Hub does):
anonymous tokens, tokens for Basic credentials, and a refused login without leaking it."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from hpc_exec.engine.image.registry import Credentials, RegistryClient
from hpc_exec.errors import AuthenticationFailed

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType":
                       "application/vnd.oci.image.manifest.v1+json",
                       "config": {"digest": "sha256:" + "0" * 64, "size": 2},
                       "layers": []}).encode()


@pytest.fixture
def bearer_registry() -> Iterator[tuple[str, dict[str, Any]]]:
    seen: dict[str, Any] = {"token_requests": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, **headers: str) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k.replace("_", "-"), v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            auth = self.headers.get("Authorization", "")
            if self.path.startswith("/token"):
                seen["token_requests"].append((self.path, auth))
                private = "private" in self.path
                good = "Basic " + base64.b64encode(b"alice:s3cret").decode()
                if private and auth != good:
                    self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}')
                    return
                self._send(200, json.dumps({"token": "tok-private" if private
                                            else "tok-anon"}).encode())
                return
            repo = "private/img" if "/private/" in self.path else "public/img"
            want = "Bearer tok-private" if repo.startswith("private") else "Bearer tok-anon"
            if auth != want:
                realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
                self._send(401, b"", WWW_Authenticate=f'Bearer realm="{realm}",'
                           f'service="fake",scope="repository:{repo}:pull"')
                return
            self._send(200, MANIFEST,
                       Content_Type="application/vnd.oci.image.manifest.v1+json")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_anonymous_and_credentialed_bearer_tokens(bearer_registry: Any) -> None:
    address, seen = bearer_registry
    with RegistryClient(address, insecure=True) as client:
        body, _, _ = client.get_manifest("public/img", "latest")
    assert body == MANIFEST
    assert "scope=repository%3Apublic%2Fimg%3Apull" in seen["token_requests"][0][0]
    assert seen["token_requests"][0][1] == ""  # no credentials: an anonymous token
    with RegistryClient(address, insecure=True,
                        credentials=Credentials("alice", "s3cret")) as client:
        body, _, _ = client.get_manifest("private/img", "latest")
    assert body == MANIFEST


def test_refused_bearer_login_does_not_leak(bearer_registry: Any) -> None:
    address, _ = bearer_registry
    with RegistryClient(address, insecure=True,
                        credentials=Credentials("alice", "wrong-pw-123")) as client:
        with pytest.raises(AuthenticationFailed) as info:
            client.get_manifest("private/img", "latest")
    assert "refused the credentials" in str(info.value)
    assert "wrong-pw-123" not in str(info.value) and "wrong-pw-123" not in repr(info.value)
