"""YCbCr matrices and FFmpeg's colour-space codes: which matrix converts which stream.

:data:`MATRICES` holds each matrix's (Kr, Kb); :data:`COLORSPACES` maps FFmpeg's
``AVColorSpace`` codes (recorded in the index) to the matrix libswscale, the CPU path, converts
them with. Pure data and functions; any thread.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "COLORSPACES",
    "MATRICES",
    "Matrix",
    "colorspace_matrix",
    "colorspace_unsupported_reason",
]

Matrix = Literal["bt601", "bt709", "fcc", "smpte240m", "bt2020"]

# (Kr, Kb) of each YCbCr matrix, as libswscale's coefficient table has them.
MATRICES: dict[str, tuple[float, float]] = {
    "bt601": (0.299, 0.114),  # BT.470 System B/G, SMPTE 170M, and "unspecified"
    "bt709": (0.2126, 0.0722),
    "fcc": (0.30, 0.11),  # FCC Title 47 (NTSC 1953)
    "smpte240m": (0.212, 0.087),
    "bt2020": (0.2627, 0.0593),  # BT.2020 non-constant luminance
}
# FFmpeg's AVColorSpace codes (libavutil/pixfmt.h, named as av_color_space_name() does) and the
# matrix the CPU path (PyAV -> libswscale) converts each with. None: no (Kr, Kb) matrix converts
# it (YCgCo, constant-luminance BT.2020, ICtCp...); libswscale refuses those too.
COLORSPACES: dict[int, tuple[str, str | None]] = {
    0: ("gbr", "bt601"),  # RGB tag on a YUV stream: swscale treats it as unspecified
    1: ("bt709", "bt709"),
    2: ("unknown", "bt601"),  # unspecified: BT.601, as swscale
    3: ("reserved", "bt601"),  # as unspecified
    4: ("fcc", "fcc"),
    5: ("bt470bg", "bt601"),
    6: ("smpte170m", "bt601"),
    7: ("smpte240m", "smpte240m"),
    8: ("ycgco", None),
    9: ("bt2020nc", "bt2020"),
    10: ("bt2020c", None),
    11: ("smpte2085", None),
    12: ("chroma-derived-nc", None),
    13: ("chroma-derived-c", None),
    14: ("ictcp", None),
    15: ("ipt-c2", None),
    16: ("ycgco-re", None),
    17: ("ycgco-ro", None),
}


def colorspace_unsupported_reason(code: int) -> str | None:
    """Why a stream declaring AVColorSpace ``code`` cannot be converted here, or None if it can.

    Codes outside FFmpeg's table are refused too (a newer FFmpeg may know them). Pure.
    """
    name, matrix = COLORSPACES.get(int(code), (None, None))
    if matrix is not None:
        return None
    known = ", ".join(f"{c} ({n})" for c, (n, m) in COLORSPACES.items() if m is not None)
    what = f"{code} ({name})" if name else f"{code} (not in FFmpeg's table)"
    return f"colour space {what} has no YCbCr matrix here (converted: {known})"


def colorspace_matrix(code: int) -> str:
    """The :data:`MATRICES` name that converts a stream declaring AVColorSpace ``code``.

    The same matrix libswscale (the CPU path) uses for that code: BT.601 for unspecified,
    reserved and the RGB tag, BT.709, FCC, SMPTE 240M and BT.2020 (non-constant luminance).

    Raises:
        ValueError: no (Kr, Kb) matrix converts ``code``
            (:func:`colorspace_unsupported_reason` says why).
    """
    reason = colorspace_unsupported_reason(code)
    if reason is not None:
        raise ValueError(f"Invalid colour space ({code}): {reason}")
    matrix = COLORSPACES[int(code)][1]
    assert matrix is not None
    return matrix
