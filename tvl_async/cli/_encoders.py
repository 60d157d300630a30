"""The encoders and containers ``tvl-async transcode`` writes, and their settings.

:func:`encoder_options` gives each encoder a fixed keyframe interval; :func:`check_options`
refuses settings that would fail on every file before the first one is encoded. Runs in the
calling thread; opening a test encoder blocks briefly.
"""

from __future__ import annotations

from fractions import Fraction

from tvl_async.cli._common import invalid

#: Encoders ``transcode`` knows how to set up, by the names it accepts.
ENCODERS: dict[str, str] = {
    "h264": "libx264",
    "libx264": "libx264",
    "hevc": "libx265",
    "libx265": "libx265",
    "vp9": "libvpx-vp9",
    "libvpx-vp9": "libvpx-vp9",
    "av1": "libsvtav1",
    "libsvtav1": "libsvtav1",
    "mpeg4": "mpeg4",
}
#: Containers ``transcode`` writes, with the encoders each can hold.
CONTAINERS: dict[str, tuple[str, ...]] = {
    "mp4": ("libx264", "libx265", "libvpx-vp9", "libsvtav1", "mpeg4"),
    "mkv": ("libx264", "libx265", "libvpx-vp9", "libsvtav1", "mpeg4"),
    "webm": ("libvpx-vp9", "libsvtav1"),
    "mov": ("libx264", "libx265", "mpeg4"),
}


def encoder_options(codec: str, gop: int, bframes: int, crf: int, preset: str) -> dict[str, str]:
    """FFmpeg options that give ``codec`` a fixed keyframe interval of ``gop`` frames."""
    if codec == "libx264":
        return {
            "preset": preset,
            "crf": str(crf),
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}",
        }
    if codec == "libx265":
        return {
            "preset": preset,
            "crf": str(crf),
            "x265-params": (
                f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}:log-level=error"
            ),
        }
    if codec == "libvpx-vp9":
        return {
            "crf": str(crf),
            "b": "0",
            "deadline": "good",
            "cpu-used": "4",
            "row-mt": "1",
            "g": str(gop),
            "keyint_min": str(gop),
        }
    if codec == "libsvtav1":
        return {"crf": str(crf), "preset": "8", "svtav1-params": f"keyint={gop}:log-level=0"}
    return {"qscale": "3", "g": str(gop), "bf": str(bframes)}  # mpeg4


#: ``--preset`` values of libx264 and libx265.
X26X_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
#: ``--crf`` range per encoder (mpeg4 has no CRF: it encodes at a fixed quantiser).
CRF_RANGES: dict[str, tuple[int, int]] = {
    "libx264": (0, 51),
    "libx265": (0, 51),
    "libvpx-vp9": (0, 63),
    "libsvtav1": (1, 63),
}


def check_options(
    codec: str, *, gop: int, bframes: int, crf: int, preset: str, pix_fmt: str
) -> None:
    """Refuse encoder settings that would fail (or be ignored) on every file, before the first
    one: CRF range, B-frames the GOP cannot hold, a preset or pixel format the encoder rejects.

    Raises:
        ValueError: naming the option, the value and what is allowed.
    """
    import av
    import av.logging

    low, high = CRF_RANGES.get(codec, (crf, crf))
    if not low <= crf <= high:
        raise ValueError(invalid("--crf", crf, f"{low}..{high}", context=f"for {codec}"))
    if codec == "mpeg4" and bframes and gop % (bframes + 1):
        # FFmpeg's MPEG-4 encoder rounds the keyframe interval down to a multiple of
        # bframes + 1 (--gop 16 --bframes 2 gives GOPs of 15)
        raise ValueError(
            invalid(
                "--gop",
                gop,
                f"multiples of bframes + 1 = {bframes + 1} (the keyframe interval)",
                context=f"with --codec mpeg4 --bframes {bframes}",
            )
        )
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.time_base = 64, 64, Fraction(1, 25)
    try:
        ctx.pix_fmt = pix_fmt
    except (ValueError, av.FFmpegError):
        raise ValueError(invalid("--pix-fmt", pix_fmt, "the pixel formats FFmpeg knows")) from None
    if codec not in ("libx264", "libx265"):  # the others take no preset (and SVT-AV1 prints a
        return  # banner when opened); their pixel format is checked by the first file
    if preset not in X26X_PRESETS:  # checked here: libx264 prints its own complaint
        raise ValueError(
            invalid("--preset", preset, ", ".join(X26X_PRESETS), context=f"for {codec}")
        )
    ctx.options = encoder_options(codec, gop, bframes, crf, preset)
    level = av.logging.get_level()
    av.logging.set_level(av.logging.PANIC)  # the encoder's own complaint would be a second line
    try:
        ctx.open()
    except av.FFmpegError as e:
        raise ValueError(
            invalid(
                "--pix-fmt",
                pix_fmt,
                f"what {codec} encodes (yuv420p works everywhere)",
                context=f"for {codec} ({e.strerror or e})",
            )
        ) from None
    finally:
        av.logging.set_level(level)
