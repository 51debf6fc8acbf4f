"""Fixtures of the data-plane tests: a real S3-compatible server over HTTP (moto's ThreadedMotoServer on
127.0.0.1, a free port, started once per session and stopped at the end) and AWS credentials for it set in the
environment of one test only (they are the local server's, never real ones)."""
from __future__ import annotations

import socket
import uuid

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    for _ in range(5):  # another process may take the port between bind and start
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        try:
            server.start()
            break
        except OSError:
            continue
    else:
        pytest.fail("could not start the S3 server on a free port")
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch):
    """Credentials of the local server, for this test only; no profile files are read."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "videorft-test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "videorft-test-secret-" + uuid.uuid4().hex)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture
def bucket(s3_endpoint, aws_env):
    """A fresh bucket on the server and a client for it: (name, client)."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    name = f"videos-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name, client


@pytest.fixture(scope="session")
def corpus() -> dict:
    """Real videos (registry packages) and ffmpeg-made variants: name -> path, None when absent
    (tests/data/video_corpus.py)."""
    from tests.data.video_corpus import make_variants, registry_files

    return {**registry_files(), **make_variants()}
