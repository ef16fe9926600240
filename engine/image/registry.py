"""A small OCI distribution / Docker Registry v2 client on the standard library.

Why our own (docs/registry-client.md): the engine needs streaming blob downloads hashed on the
fly into a temp file, a per-registry insecure (plain http) switch from the site config, and no
extra runtime dependency on every compute node; the protocol subset is small (``/v2/``,
manifests, blobs, uploads) and its auth is two challenge schemes (Basic, Bearer token).

Credentials are held in :class:`Credentials` whose ``repr`` hides the password; no header, URL or
log line written here contains a secret.

Pull side: :meth:`RegistryClient.get_manifest` verifies a manifest's digest,
:meth:`RegistryClient.download_blob` streams a blob into a file while hashing it and removes the
file on a size or digest mismatch (:class:`~hpc_exec.errors.ImageContentError`). Requests are
retried with exponential backoff (plus jitter) on connection errors, resets, timeouts, 429 and
5xx; a blob download that breaks mid-stream starts again. Each client is single-threaded;
:meth:`RegistryClient.clone` makes one per download thread, sharing the auth token.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import random
import re
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from hpc_exec.errors import AuthenticationFailed, ImageContentError, ImageNotFound, RegistryError

__all__ = ["Credentials", "RegistryClient", "Response", "manifest_name", "parse_challenge",
           "split_host_port"]

log = logging.getLogger(__name__)

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
CHUNK = 1 << 20
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
RETRIES = 4  # attempts after the first; delays 0.5, 1, 2, 4 s (+ jitter), or Retry-After


class _Transient(RegistryError):
    """A failure worth retrying (connection reset, timeout, 5xx)."""


def _backoff(attempt: int, retry_after: str | None = None) -> float:
    if retry_after and retry_after.isdigit():
        return min(float(retry_after), 10.0)
    return 0.5 * float(1 << attempt) * (1 + random.random() / 4)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Parse a ``WWW-Authenticate`` header: ('bearer', {'realm': ..., 'service': ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    return scheme.lower(), params


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


def split_host_port(server: str) -> tuple[str, str]:
    """``host[:port]`` or ``[v6 address][:port]`` -> (host without brackets, port or '')."""
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        return host, rest.removeprefix(":")
    host, _, port = server.partition(":")
    return host, port


def manifest_name(repo: str, reference: str) -> str:
    """``repo:tag`` or ``repo@digest`` as users write it (a tag never contains ':', a digest
    always does): messages must not echo ``busybox:sha256:...`` (issue 12, item 13)."""
    return f"{repo}@{reference}" if ":" in reference else f"{repo}:{reference}"


class RegistryClient:
    """One registry (``host[:port]``), one connection at a time per client object.

    ``insecure`` selects plain http (only for registries the site config lists); ``ca_file``
    adds a CA to trust for https. Not thread-safe: use one client per thread.
    """

    def __init__(
        self,
        server: str,
        *,
        credentials: Credentials | None = None,
        insecure: bool = False,
        ca_file: str | None = None,
        timeout: float = 60.0,
        ca_files: Sequence[str | Path] = (),
        retries: int = RETRIES,
    ) -> None:
        self.server = server
        self.credentials = credentials
        self.insecure = insecure
        self.timeout = timeout
        self.retries = retries
        self._ctx = None if insecure else ssl.create_default_context(cafile=ca_file)
        for extra in ca_files:
            assert self._ctx is not None
            self._ctx.load_verify_locations(cafile=str(extra))
        self._auth: str | None = None  # Authorization header value that worked last
        self._conn: http.client.HTTPConnection | None = None

    # -- transport -----------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            host, port = split_host_port(self.server)
            if self.insecure:
                self._conn = http.client.HTTPConnection(
                    host, int(port) if port else 80, timeout=self.timeout)
            else:
                self._conn = http.client.HTTPSConnection(
                    host, int(port) if port else 443, timeout=self.timeout, context=self._ctx)
        return self._conn

    def clone(self) -> RegistryClient:
        """A new client for another thread, with the same settings and current auth token."""
        other = RegistryClient(self.server, credentials=self.credentials, insecure=self.insecure,
                               timeout=self.timeout, retries=self.retries)
        other._ctx = self._ctx
        other._auth = self._auth
        return other

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(
        self, method: str, target: str, headers: dict[str, str], body: bytes | IO[bytes] | None
    ) -> http.client.HTTPResponse:
        conn = self._connection()
        try:
            conn.request(method, target, body=body, headers=headers)
            return conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            scheme = "http" if self.insecure else "https"
            cert = isinstance(exc, ssl.SSLCertVerificationError)
            cls = RegistryError if cert else _Transient
            if isinstance(exc, TimeoutError):
                why = f"no answer within {self.timeout:g} s"
                hint = "raise registryTimeoutMs in the site config if it is just slow"
            elif cert:
                why = str(exc)
                hint = (f"put the registry's CA certificate in /etc/docker/certs.d/"
                        f"{self.server}/ca.crt (or SSL_CERT_FILE)")
            else:
                why, hint = str(exc), None
            # Only a TLS handshake answered in plain text suggests a plain-http registry.
            if not self.insecure and not cert and isinstance(exc, ssl.SSLError):
                hint = "if it serves plain http, list it under insecureRegistries in the " \
                    "site config"
            err = cls(f"cannot reach registry {scheme}://{self.server}: {why}", hint=hint)
            err.timed_out = isinstance(exc, TimeoutError)  # type: ignore[attr-defined]
            raise err from exc

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        stream: bool = False,
        scope: str = "",
    ) -> tuple[int, http.client.HTTPResponse | Response]:
        """Send a request, answering one auth challenge. Returns (status, response).

        ``path`` may be an absolute URL from a Location header. With ``stream`` the caller reads
        and closes the raw response; else the body is read into a :class:`Response`.
        """
        target = path
        if path.startswith(("http://", "https://")):
            parsed = urllib.parse.urlsplit(path)
            target = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        hdrs = dict(headers or {})
        challenged = False
        attempt = 0
        while True:
            if self._auth:
                hdrs["Authorization"] = self._auth
            try:
                resp = self._send(method, target, hdrs, body)
            except _Transient as exc:
                if attempt >= self.retries:
                    raise RegistryError(exc.message, hint=exc.hint) from exc
                delay = _backoff(attempt)
                # a registry that never answers costs registryTimeoutMs per attempt: say so
                level = logging.WARNING if getattr(exc, "timed_out", False) else logging.INFO
                log.log(level, "%s; retry %d of %d in %.1f s", exc.message, attempt + 1,
                        self.retries, delay)
                attempt += 1
                time.sleep(delay)
                continue
            if resp.status in TRANSIENT_STATUS and attempt < self.retries:
                delay = _backoff(attempt, resp.getheader("Retry-After"))
                resp.read()
                log.info("registry %s answered %d to %s %s; retry %d of %d in %.1f s",
                         self.server, resp.status, method, target.split("?")[0],
                         attempt + 1, self.retries, delay)
                attempt += 1
                time.sleep(delay)
                continue
            if resp.status == 401 and not challenged:
                challenged = True
                challenge = resp.getheader("WWW-Authenticate", "")
                resp.read()
                self._authenticate(challenge, scope)
                continue
            break
        if resp.status == 401:
            resp.read()
            raise AuthenticationFailed(
                f"registry {self.server} refused the credentials"
                + ("" if self.credentials else " (none given)"),
                hint="use --username with --password-stdin, --login, or a docker/podman auth "
                "file",
            )
        if stream:
            return resp.status, resp
        return resp.status, Response(resp.status, dict(resp.getheaders()), resp.read())

    def _authenticate(self, challenge: str, scope: str) -> None:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self.credentials is None:
                raise AuthenticationFailed(f"registry {self.server} requires a login")
            self._auth = self.credentials.basic_header()
            return
        if scheme != "bearer" or "realm" not in params:
            raise RegistryError(f"registry {self.server} sent an unknown auth challenge "
                                f"{scheme!r}")
        query = {"service": params.get("service", "")}
        if scope or params.get("scope"):
            query["scope"] = scope or params["scope"]
        realm = urllib.parse.urlsplit(params["realm"])
        token_client = RegistryClient(
            realm.netloc, insecure=realm.scheme == "http", timeout=self.timeout)
        token_client._ctx = self._ctx
        hdrs = {"Authorization": self.credentials.basic_header()} if self.credentials else {}
        try:
            tpath = realm.path + "?" + urllib.parse.urlencode(query)
            resp = token_client._send("GET", tpath, hdrs, None)
            body = resp.read()
        finally:
            token_client.close()
        if resp.status in (401, 403):
            raise AuthenticationFailed(f"registry {self.server} refused the credentials")
        if resp.status != 200:
            raise RegistryError(f"token service of {self.server} answered {resp.status}")
        data = json.loads(body)
        token = data.get("token") or data.get("access_token")
        if not token:
            raise RegistryError(f"token service of {self.server} returned no token")
        self._auth = f"Bearer {token}"

    # -- protocol ------------------------------------------------------------------------------
    def ping(self) -> int:
        status, _ = self.request("GET", "/v2/")
        return status

    def blob_exists(self, repo: str, digest: str) -> bool:
        status, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}",
                                 scope=f"repository:{repo}:pull")
        return status == 200

    def push_blob(self, repo: str, digest: str, data: bytes) -> None:
        """Monolithic upload (POST then PUT), skipped when the registry has the blob."""
        scope = f"repository:{repo}:pull,push"
        if self.blob_exists(repo, digest):
            return
        status, resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope)
        assert isinstance(resp, Response)
        if status != 202:
            raise RegistryError(f"registry {self.server} refused an upload to {repo}: {status}")
        location = resp.headers.get("Location") or resp.headers.get("location") or ""
        sep = "&" if "?" in location else "?"
        status, resp = self.request(
            "PUT", f"{location}{sep}digest={urllib.parse.quote(digest)}",
            headers={"Content-Type": "application/octet-stream",
                     "Content-Length": str(len(data))},
            body=data, scope=scope)
        if status != 201:
            raise RegistryError(f"registry {self.server} rejected blob {digest}: {status}")

    def put_manifest(self, repo: str, reference: str, manifest: bytes, media_type: str) -> None:
        status, resp = self.request(
            "PUT", f"/v2/{repo}/manifests/{reference}",
            headers={"Content-Type": media_type}, body=manifest,
            scope=f"repository:{repo}:pull,push")
        if status != 201:
            body = resp.body[:200] if isinstance(resp, Response) else b""
            raise RegistryError(f"registry {self.server} rejected manifest "
                                f"{manifest_name(repo, reference)}: {status} {body!r}")

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, str]:
        """(body, media type, digest) of a manifest or index.

        The digest is computed from the body; when ``reference`` is a digest, or the registry
        sends ``Docker-Content-Digest``, a mismatch is an ImageContentError.
        """
        status, resp = self.request(
            "GET", f"/v2/{repo}/manifests/{reference}",
            headers={"Accept": ", ".join(MANIFEST_TYPES)}, scope=f"repository:{repo}:pull")
        assert isinstance(resp, Response)
        if status == 404:
            raise ImageNotFound(f"image {self.server}/{manifest_name(repo, reference)} not found")
        if status != 200:
            raise RegistryError(f"registry {self.server} answered {status} for manifest "
                                f"{manifest_name(repo, reference)}")
        headers = {k.lower(): v for k, v in resp.headers.items()}
        digest = "sha256:" + hashlib.sha256(resp.body).hexdigest()
        claimed = reference if reference.startswith("sha256:") else \
            headers.get("docker-content-digest", "")
        if claimed and claimed.startswith("sha256:") and claimed != digest:
            raise ImageContentError(f"manifest {manifest_name(repo, reference)} from "
                                    f"{self.server} has digest {digest}, expected {claimed}")
        return resp.body, headers.get("content-type", ""), digest

    def download_blob(
        self,
        repo: str,
        digest: str,
        dest: Path,
        *,
        size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Stream blob ``digest`` into ``dest``, verifying size and sha256 as it arrives.

        A transfer that breaks is restarted (with backoff) up to ``retries`` times. On a
        mismatch or any failure ``dest`` is removed and the error raised.
        """
        attempt = 0
        while True:
            try:
                self._download_once(repo, digest, dest, size, progress)
                return
            except _Transient as exc:
                dest.unlink(missing_ok=True)
                if attempt >= self.retries:
                    raise RegistryError(exc.message) from exc
                delay = _backoff(attempt)
                log.info("%s; retrying blob %s in %.1f s", exc.message, digest[:19], delay)
                attempt += 1
                time.sleep(delay)
            except BaseException:
                dest.unlink(missing_ok=True)
                raise

    def _download_once(self, repo: str, digest: str, dest: Path, size: int | None,
                       progress: Callable[[int], None] | None) -> None:
        h = hashlib.sha256()
        got = 0
        disk: OSError | None = None  # a write to our own disk failed: no network fault
        with open(dest, "wb") as out:
            try:
                for chunk in self.iter_blob(repo, digest):
                    h.update(chunk)
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        disk = exc
                        break
                    got += len(chunk)
                    if size is not None and got > size:
                        self.close()  # abandon the rest of the response
                        break
                    if progress is not None:
                        progress(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise _Transient(f"download of {digest[:19]} from {self.server} broke: "
                                 f"{exc}") from exc
            if disk is not None:  # not retried: the caller names the full filesystem
                self.close()
                raise disk
        actual = "sha256:" + h.hexdigest()
        if size is not None and got < size:  # the connection ended early: try again
            self.close()
            raise _Transient(f"download of {digest[:19]} from {self.server} ended after {got} "
                             f"of {size} bytes")
        if size is not None and got != size:
            raise ImageContentError(f"blob {digest} from {self.server}/{repo} has {got}+ bytes, "
                                    f"expected {size}: rejected")
        if actual != digest:
            raise ImageContentError(f"blob {digest} from {self.server}/{repo} has digest "
                                    f"{actual}: corrupted, rejected")

    def iter_blob(self, repo: str, digest: str) -> Iterator[bytes]:
        """Stream a blob's bytes (the caller verifies the digest)."""
        status, resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", stream=True,
                                    scope=f"repository:{repo}:pull")
        assert isinstance(resp, http.client.HTTPResponse)
        if status in (301, 302, 303, 307, 308):
            location = resp.getheader("Location", "")
            resp.read()
            yield from _follow(location, self.timeout, self._ctx)
            return
        if status == 404:
            resp.read()
            raise ImageNotFound(f"blob {digest} not found in {self.server}/{repo}")
        if status != 200:
            resp.read()
            raise RegistryError(f"registry {self.server} answered {status} for blob {digest}")
        try:
            while chunk := resp.read(CHUNK):
                yield chunk
        finally:
            resp.close()


def _follow(url: str, timeout: float, ctx: ssl.SSLContext | None) -> Iterator[bytes]:
    """Read a redirected blob (e.g. object storage) without our registry credentials."""
    parts = urllib.parse.urlsplit(url)
    client = RegistryClient(parts.netloc, insecure=parts.scheme == "http", timeout=timeout)
    client._ctx = ctx
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        resp = client._send("GET", target, {}, None)
        if resp.status != 200:
            resp.read()
            raise RegistryError(f"blob download from {parts.netloc} answered {resp.status}")
        while chunk := resp.read(CHUNK):
            yield chunk
    finally:
        client.close()
