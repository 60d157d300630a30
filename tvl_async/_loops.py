"""The consumer's view of the service's endless stream: which epochs each loop covers.

The service produces epoch after epoch (an end marker after each); a ``for`` loop over a
``Prefetcher`` covers ``epochs`` epochs of that stream (the DataLoader idiom with the default
``epochs=1``: one loop, one epoch) and the next loop goes on with the next epoch, whose first
batches are already prepared. :class:`EpochLoops` keeps that bookkeeping, the resume position
and where the stream must restart (dropping what the service prepared). Consumer thread only;
nothing here blocks.

Rules (see :class:`~tvl_async._prefetcher.Prefetcher`):

- a loop started by ``iter()`` (a ``for``) or by a bare ``next()`` ends after the end marker of
  its last epoch; then ``next()`` raises ``StopIteration`` until ``iter()`` starts the next loop;
- a ``for`` loop left early (``break``) and iterated again: the rest of its epoch is skipped and
  the new loop starts at the next epoch (a fresh epoch, as a DataLoader starts a fresh iterator);
  a loop begun with ``next()`` and then iterated with ``for`` goes on where ``next()`` stopped;
- ``set_epoch(e)`` between loops makes the next loop start at epoch ``e``.
"""

from __future__ import annotations

from typing import Any


class EpochLoops:
    """Loop and epoch bookkeeping over the stream (consumer thread only).

    Args:
        epochs: epochs per loop (None: one endless loop).
        samples_per_epoch: this rank's samples per epoch.
        start_epoch: the epoch the stream begins with.
    """

    def __init__(self, epochs: int | None, samples_per_epoch: int, start_epoch: int) -> None:
        self.epochs = epochs
        self.per_epoch = samples_per_epoch
        self.next_epoch = start_epoch  # where the stream goes on after the markers seen
        self.loop_end = self._end_from(start_epoch)  # end of the current (or next) loop
        self.open = False  # a loop is in progress
        self.by_iter = False  # ... and a `for` (an iter() call) is iterating it
        self.batches_in_loop = 0
        self.finished = False  # the last loop ended: next() stops until iter()
        self.last_epoch: int | None = None  # epoch of the last batch delivered
        self.resume_at: tuple[int, int] | None = None  # (epoch, position) of the next sample

    def _end_from(self, epoch: int) -> int | None:
        return None if self.epochs is None else epoch + self.epochs

    def start_at(self, epoch: int, loop_end: int | None = None) -> None:
        """Before the service starts: the stream and the first loop begin at ``epoch`` and the
        loop ends at ``loop_end`` if that lies after ``epoch`` (a resumed loop), else after
        ``epochs`` epochs."""
        self.next_epoch = epoch
        later = loop_end is not None and epoch < loop_end
        self.loop_end = loop_end if later else self._end_from(epoch)

    def on_iter(self) -> int | None:
        """``iter()`` was called; returns the epoch the stream must restart at, or None."""
        restart = None
        if self.open and self.by_iter and self.batches_in_loop:  # a `for` left early
            assert self.last_epoch is not None
            restart = self.last_epoch + 1
            if self.resume_at == (self.last_epoch, self.per_epoch):
                restart = None  # its epoch was all delivered: the end marker simply follows
            else:
                self.restarted(restart)
            self.open = False
            self.loop_end = self._end_from(self.last_epoch + 1)
        if not self.open:
            self.begin()
        self.by_iter = True
        return restart

    def begin(self) -> None:
        """A new loop, from where the stream stands."""
        self.open, self.by_iter, self.batches_in_loop, self.finished = True, False, 0, False

    def can_set_epoch(self) -> bool:
        """Whether ``set_epoch`` is allowed: between loops, or after a ``for`` was left."""
        return not self.open or (self.by_iter and self.batches_in_loop > 0)

    def set_epoch(self, epoch: int) -> bool:
        """The next loop starts at ``epoch``; returns whether the stream must restart there."""
        restart = self.open or epoch != self.next_epoch
        self.open = False
        if restart:
            self.restarted(epoch)
        self.loop_end = self._end_from(epoch)
        return restart

    def restarted(self, epoch: int) -> None:
        """The stream restarts at the first sample of ``epoch``."""
        self.next_epoch = epoch
        self.resume_at = (epoch, 0)

    def on_batch(self, epoch: int, resume_at: tuple[int, int]) -> None:
        """A batch of ``epoch`` was delivered."""
        self.last_epoch = epoch
        self.resume_at = resume_at
        self.batches_in_loop += 1

    def on_epoch_end(self, epoch: int) -> bool:
        """The end marker of ``epoch`` arrived; returns whether the loop ends here."""
        self.next_epoch = epoch + 1
        self.resume_at = (epoch + 1, 0)
        if self.loop_end is None or epoch + 1 < self.loop_end:
            return False
        self.open, self.finished = False, True
        self.loop_end = self._end_from(epoch + 1)
        return True

    def state(self) -> dict[str, Any]:
        """What a state dict needs besides the sampler's: the end of the loop it is in."""
        return {"loop_end": self.loop_end}
