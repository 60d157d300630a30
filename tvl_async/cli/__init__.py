"""The applications built on tvl_async's public API (nothing in the library imports them).

- :mod:`tvl_async.cli.main`: the ``tvl-async`` command; one module per command:
  :mod:`~tvl_async.cli.demo`, :mod:`~tvl_async.cli.probe` (``probe`` and ``index``),
  :mod:`~tvl_async.cli.transcode`, :mod:`~tvl_async.cli.play` (the Tk player) and
  :mod:`~tvl_async.cli.bench` (the throughput benchmark);
- :mod:`tvl_async.cli.synthetic`: the test-video writer (each frame carries its index in its
  pixels), used by the test suite, ``demo``, ``bench`` and the examples.

Public here: :func:`exit_on_error` and :func:`error_line`, the one-line error reporting that
the command, the examples and the tools share.
"""

from __future__ import annotations

from tvl_async.cli._common import error_line, exit_on_error

__all__ = ["error_line", "exit_on_error"]
