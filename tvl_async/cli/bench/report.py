"""``tvl-async bench``'s outputs: the Markdown table and the bar chart (matplotlib).

matplotlib is optional (``pip install -e ".[bench]"``); :func:`check_plotting` says in one line
when it is missing, before any measurement. Runs in the calling thread; writing blocks.
"""

from __future__ import annotations

import math
import os
from typing import Any


def format_table(report: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    head = (
        "| configuration | images/s | × baseline | × ceiling | decoded / delivered | "
        "peak RSS MB | first batch s | wait after first s | wait after window s |"
    )
    remote = any("source" in r for r in report["results"])
    if remote:  # the local/remote pair (--s3, --remote): bytes per sample
        head += " read kB / sample | GOP kB / sample |"
    lines = [head, "| " + " | ".join(["---"] + ["---:"] * (10 if remote else 8)) + " |"]
    for r in report["results"]:
        if "error" in r:
            lines.append(
                f"| {r['name']} | failed: {r['error'].splitlines()[-1][:80]} |"
                + " |" * (9 if remote else 7)
            )
            continue
        slow = r.get("consumer_s")
        name = r["name"] + (f" ({slow:.2f} s/batch)" if slow else "")
        rss = max(r.get("peak_tree_rss_mb") or 0.0, r.get("peak_rss_mb") or 0.0)
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    _f(r.get("images_per_s"), 1),
                    _f(r.get("vs_baseline"), 2, "×"),
                    _f(r.get("vs_ceiling"), 2, "×"),
                    # a slow consumer's decoders run ahead into the window: no per-batch figure
                    _f(None if slow else r.get("decoded_per_delivered"), 2),
                    _f(rss, 0),
                    _f(r.get("first_batch_s"), 1),
                    _f(r.get("wait_after_first_s") if slow else None, 2),
                    _f(r.get("wait_after_window_s") if slow else None, 2),
                ]
                + (
                    [_f(_kb(r, "bytes_read_per_sample"), 0), _f(_kb(r, "gop_bytes_per_sample"), 0)]
                    if remote
                    else []
                )
            )
            + " |"
        )
    return "\n".join(lines)


def _kb(r: dict[str, Any], key: str) -> float | None:
    """``r[key]`` in kB for the local/remote pair; None for the other rows."""
    return r[key] / 1e3 if "source" in r and r.get(key) is not None else None


def _f(v: float | None, digits: int, suffix: str = "") -> str:
    return (
        "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}{suffix}"
    )


def check_plotting() -> None:
    """Raise RuntimeError (one line) when matplotlib, needed by ``--plot``, is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise RuntimeError(
            f"--plot needs matplotlib ({e}); install it with "
            f'pip install matplotlib, or pip install -e ".[bench]" from a '
            f"checkout"
        ) from None


def write_plot(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a PNG bar chart of images/s per configuration (fast consumers) to ``path``.

    Raises:
        RuntimeError: matplotlib is not installed.
    """
    check_plotting()
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    rows = [
        (r["name"], float(r["images_per_s"]))
        for r in report["results"]
        if "error" not in r and r.get("images_per_s") and not r.get("consumer_s")
    ]
    title = (
        f"tvl-async bench: images/s, {report['machine']['cpu_count']} cores "
        f"({report['videos'].get('width', '?')}x{report['videos'].get('height', '?')})"
    )
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(rows) + 1.2))
    try:
        names, values = [n for n, _ in rows][::-1], [v for _, v in rows][::-1]
        bars = ax.barh(names, values)
        ax.bar_label(bars, fmt="%.1f", padding=3)
        ax.set_xlabel("images/s")
        ax.set_title(title)
        ax.margins(x=0.12)
        fig.tight_layout()
        fig.savefig(path, dpi=100, format="png")
    finally:
        plt.close(fig)
