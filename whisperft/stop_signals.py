"""Stop signals during a training run: what Ctrl-C, `kill` and Windows' Ctrl-Break do to the
trainer (abort before the loop, finish the step and save in it) and to its data workers
(nothing: they are the trainer's to stop)."""

from __future__ import annotations

import contextlib
import signal
import sys

# Ctrl-C, `kill`, and Windows' Ctrl-Break / console close.
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, n))


class StopFlag:
    """The stop signals, for the whole of a run.

    Before the loop (loading, encoder cache, first evaluation) nothing is trained yet: a signal
    aborts at once, and what was half-written is removed on the way out. In the loop it asks
    for the step to finish, a resumable checkpoint and a clean exit; a second one aborts.
    """

    def __init__(self):
        self.signal = None
        self.graceful = False
        self._old = {}

    def __enter__(self):
        for sig in STOP_SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if not self.graceful or self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        print(f"\n{signal.Signals(signum).name}: finishing this step, saving, then stopping "
              "(press again to abort without saving)", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """In a data-loading worker: a Ctrl-C to the terminal's process group is the trainer's to
    handle (it finishes its step); a worker exits when the trainer does."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def workers_ignore_stop_signals():
    """Start DataLoader workers inside this: they inherit ignored stop signals from their first
    instruction on, under fork and spawn alike (ignored signals survive exec, and Python keeps
    an ignored SIGINT ignored); `ignore_stop_signals` as worker_init_fn covers Windows."""
    old = {}
    for sig in STOP_SIGNALS:
        try:
            old[sig] = signal.signal(sig, signal.SIG_IGN)
        except ValueError:
            pass
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
