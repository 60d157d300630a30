"""A horizontal bar chart written as a PNG with numpy and zlib only (``tvl-async bench --plot``
without matplotlib). Text uses a built-in 5x7 bitmap font (upper case, digits, a few signs)."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

_GLYPHS_TEXT = {
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11110 00001 00001 01110 00001 00001 11110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11100 10010 10001 10001 10001 10010 11100",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 10001 01010 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    ",": "00000 00000 00000 00000 01100 00100 01000",
    "=": "00000 00000 11111 00000 11111 00000 00000",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    "_": "00000 00000 00000 00000 00000 00000 11111",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000",
    "/": "00000 00001 00010 00100 01000 10000 00000",
    "%": "11000 11001 00010 00100 01000 10011 00011",
    "+": "00000 00100 00100 11111 00100 00100 00000",
    "×": "00000 10001 01010 00100 01010 10001 00000",
    "?": "01110 10001 00001 00010 00100 00000 00100",
}
_GLYPHS = {c: np.array([[b == "1" for b in row] for row in text.split()], dtype=bool)
           for c, text in _GLYPHS_TEXT.items()}
SCALE = 2  # pixels per font pixel
CHAR_W, CHAR_H = 6 * SCALE, 8 * SCALE  # with one column/row of spacing


def _text(img: np.ndarray, x: int, y: int, text: str, color: tuple[int, int, int]) -> None:
    for k, ch in enumerate(text.upper()):
        glyph = _GLYPHS.get(ch, _GLYPHS["?"])
        big = np.kron(glyph, np.ones((SCALE, SCALE), dtype=bool))
        x0 = x + k * CHAR_W
        region = img[y:y + big.shape[0], x0:x0 + big.shape[1]]
        mask = big[:region.shape[0], :region.shape[1]]
        region[mask] = color


def bar_chart_png(path: str | os.PathLike[str], rows: list[tuple[str, float]],
                  title: str) -> None:
    """Write a horizontal bar chart of ``(label, value)`` rows to ``path`` (PNG, RGB)."""
    label_w = (max((len(n) for n, _ in rows), default=4) + 1) * CHAR_W
    bar_w, row_h, pad = 520, CHAR_H + 10, 12
    width = pad + label_w + bar_w + 10 * CHAR_W + pad
    height = pad + CHAR_H + 14 + row_h * len(rows) + pad
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    _text(img, pad, pad, title, (0, 0, 0))
    top = pad + CHAR_H + 14
    vmax = max((v for _, v in rows), default=1.0) or 1.0
    for k, (name, value) in enumerate(rows):
        y = top + k * row_h
        _text(img, pad, y + 4, name, (40, 40, 40))
        x0 = pad + label_w
        w = max(1, round(bar_w * value / vmax))
        color = (200, 90, 60) if name.startswith("baseline") else \
            (120, 120, 120) if name.startswith("ceiling") else (60, 110, 190)
        img[y + 2:y + row_h - 2, x0:x0 + w] = color
        _text(img, x0 + w + 6, y + 4, f"{value:.1f}", (0, 0, 0))
    write_png(path, img)


def write_png(path: str | os.PathLike[str], img: np.ndarray) -> None:
    """Write an ``[H, W, 3]`` uint8 array as an 8-bit RGB PNG."""
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(png)
