"""The Tk video player (``tvl-async play``, examples/video_player.py), on
:class:`tvl_async.VideoLoader`: :mod:`~tvl_async.cli.play.command` (options, checks, main loop),
:mod:`~tvl_async.cli.play.player` (the window, Tk thread) and :mod:`~tvl_async.cli.play.worker`
(the decode thread, its messages, the playback clock)."""
