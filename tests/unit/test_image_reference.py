"""engine/image/reference.py: the grammar, defaults, normalisation and one-line errors."""

from __future__ import annotations

import pytest

from hpc_exec.engine.image.reference import api_host, parse
from hpc_exec.errors import InvalidInput

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("text", "key"), [
    ("busybox", "docker.io/library/busybox:latest"),
    ("docker://busybox", "docker.io/library/busybox:latest"),
    ("oras://ghcr.io/org/tool:1", "ghcr.io/org/tool:1"),
    ("ubuntu:22.04", "docker.io/library/ubuntu:22.04"),
    ("user/image", "docker.io/user/image:latest"),
    ("index.docker.io/library/alpine", "docker.io/library/alpine:latest"),
    ("registry-1.docker.io/alpine:3", "docker.io/library/alpine:3"),
    ("localhost/foo", "localhost/foo:latest"),
    ("localhost:5000/foo/bar:v1", "localhost:5000/foo/bar:v1"),
    ("127.0.0.1:47385/testbed/busybox", "127.0.0.1:47385/testbed/busybox:latest"),
    ("quay.io/a/b/c/d:tag_1.0-x", "quay.io/a/b/c/d:tag_1.0-x"),
    ("my-reg.example.com/ns/img-name__x.y", "my-reg.example.com/ns/img-name__x.y:latest"),
    (f"alpine@{D}", f"docker.io/library/alpine@{D}"),
    (f"alpine:3.19@{D}", f"docker.io/library/alpine@{D}"),
    (f"docker://ghcr.io/x/y:t@{D}", f"ghcr.io/x/y@{D}"),
    ("Docker.IO/library/alpine", "docker.io/library/alpine:latest"),
    ("My.Registry:5000/x", "my.registry:5000/x:latest"),
])
def test_normalised_key(text: str, key: str) -> None:
    assert parse(text).key == key


def test_fields_and_digest_wins() -> None:
    ref = parse(f"localhost:5000/ns/img:v2@{D}")
    assert (ref.server, ref.repository, ref.tag, ref.digest) == ("localhost:5000", "ns/img",
                                                                 "v2", D)
    assert ref.manifest_reference == D
    assert ref.name == "localhost:5000/ns/img"
    assert parse("x/y:1").manifest_reference == "1"


def test_same_image_same_key() -> None:
    keys = {parse(t).key for t in ("alpine", "docker://alpine:latest", "library/alpine",
                                   "docker.io/library/alpine:latest",
                                   "index.docker.io/alpine")}
    assert keys == {"docker.io/library/alpine:latest"}


def test_api_host() -> None:
    assert api_host("docker.io") == "registry-1.docker.io"
    assert api_host("127.0.0.1:5000") == "127.0.0.1:5000"


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty"),
    ("Alpine", "must be lowercase (found 'Alpine')"),
    ("quay.io/Org/img", "must be lowercase (found 'Org')"),
    ("a/../b", "'..' is not allowed"),
    ("quay.io//img", "empty path component"),
    ("img/", "empty path component"),
    ("/img", "empty path component"),
    ("img:", "tag after ':' is empty"),
    ("img:-bad", "bad tag '-bad'"),
    ("img@", "digest after '@' is empty"),
    ("img@sha256:abc", "sha256 needs 64 lowercase hex digits"),
    ("img@md5:" + "a" * 32, "unsupported digest algorithm 'md5'"),
    ("img@nodigest", "bad digest 'nodigest'"),
    ("img@" + D + "@" + D, "more than one '@'"),
    ("img name", "whitespace"),
    ("shub://a/b", "'shub://' scheme is not supported"),
    ("ftp://a/b", "unknown scheme 'ftp'://"),
    ("a/b-/c", "bad path component 'b-'"),
    ("a" * 300, "longer than 255"),
])
def test_rejected_with_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse(text)
    msg = str(info.value)
    assert reason in msg
    assert "\n" not in msg
    assert msg.startswith("invalid image reference")
