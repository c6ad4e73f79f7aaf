"""A progress bar for validation and testing.

mmengine 0.10.7 reports val / test progress only as a ``LoggerHook`` line every ``interval``
iterations (50 in the mmdet / mmseg runtimes), so ``tools/test.py`` on COCO or ADE20K val shows
nothing for minutes. :class:`EvalProgressBarHook` (mmengine's ``HOOKS``, so mmdet and mmseg
configs find it) draws one on the main process only, on stderr (the logger writes to stdout):

* on a terminal, a bar redrawn in place (at most every ``min_interval`` seconds, and at the
  iterations the ``LoggerHook`` logs, which then start on a fresh line)::

      test [##########----------]  250/500  50%  4.1 it/s  0:01:01<0:01:01

* otherwise (a log file, a pipe, a batch job), the same text as plain lines at 0 % and every
  ``line_percent`` percent (every 50 iterations when the length is unknown), so progress is
  visible in any log.

After the last iteration the line ends with ``computing metrics``: the evaluator (COCO, IoU)
runs between the last iteration and the logger's metrics line.

mmengine's ``ProgressBar`` is not used: it only redraws in place, which in a log file becomes
one line that grows for the whole run.
"""
import math
import sys
import time
from typing import Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook, LoggerHook
from mmengine.registry import HOOKS


def _hms(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


@HOOKS.register_module(force=True)
class EvalProgressBarHook(Hook):
    """A progress bar over the val / test iterations (main process, stderr).

    Args:
        width (int): Characters of the bar itself. Defaults to 20.
        min_interval (float): Terminal mode: seconds between redraws. Defaults to 0.2.
        line_percent (int): Line mode: a line every this many percent. Defaults to 10.
        tty (bool, optional): Force terminal (True) or line (False) mode. Defaults to None:
            terminal mode when the stream is a TTY.
        stream (file, optional): Where to write. Defaults to None: ``sys.stderr`` at the time of
            writing.
    """

    # Before LoggerHook ('BELOW_NORMAL'), so a logged iteration's bar line ends first.
    priority = 'NORMAL'

    def __init__(self, width: int = 20, min_interval: float = 0.2, line_percent: int = 10,
                 tty: Optional[bool] = None, stream=None):
        if not 0 < line_percent <= 100:
            raise ValueError(f'line_percent must be in (0, 100], got {line_percent}')
        self.width = width
        self.min_interval = min_interval
        self.line_percent = line_percent
        self.tty = tty
        self._stream = stream
        self._phase = None

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stderr

    # ---- mmengine hook points ----------------------------------------------------------------
    def before_val_epoch(self, runner) -> None:
        self._start(runner, 'val')

    def before_test_epoch(self, runner) -> None:
        self._start(runner, 'test')

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._step(runner, batch_idx)

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._step(runner, batch_idx)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._finish()

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._finish()

    # ---- the bar -----------------------------------------------------------------------------
    def _start(self, runner, phase: str) -> None:
        self._phase = None
        if not is_main_process():
            return
        loop = runner.val_loop if phase == 'val' else runner.test_loop
        try:
            self._total = len(loop.dataloader)
        except TypeError:  # an iterable dataset without a length
            self._total = None
        tty = self.tty
        if tty is None:
            isatty = getattr(self.stream, 'isatty', None)
            tty = bool(isatty and isatty())
        self._phase, self._tty = phase, tty
        self._done, self._t0, self._last_draw, self._next_line = 0, time.perf_counter(), 0.0, 0
        self._open = False  # terminal mode: a bar line is on screen without its newline
        self._loggers = [h for h in runner.hooks if isinstance(h, LoggerHook)]
        self._emit(final=False, force=True)

    def _step(self, runner, batch_idx: int) -> None:
        if self._phase is None:
            return
        self._done = batch_idx + 1
        last = self._total is not None and self._done >= self._total
        logged = any(h.every_n_inner_iters(batch_idx, h.interval) for h in self._loggers)
        self._emit(final=last, force=last or logged)
        if self._tty and logged and self._open and not last:
            self._write('\n')  # the logger's line starts on a line of its own
            self._open = False

    def _finish(self) -> None:
        if self._phase is not None and self._tty and self._open:
            self._write('\n')
        self._phase = None

    def text(self, final: bool = False) -> str:
        """The current progress line (without the terminal control characters)."""
        elapsed = time.perf_counter() - self._t0
        rate = self._done / elapsed if elapsed > 0 else 0.0
        n, total = self._done, self._total
        if total:
            frac = min(n / total, 1.0)
            fill = int(self.width * frac)
            eta = _hms((total - n) / rate) if rate > 0 else '?'
            digits = len(str(total))
            line = (f'{self._phase} [{"#" * fill}{"-" * (self.width - fill)}] '
                    f'{n:>{digits}}/{total}  {int(100 * frac):3d}%  {rate:.2f} it/s  '
                    f'{_hms(elapsed)}<{eta}')
        else:
            line = f'{self._phase} {n} it  {rate:.2f} it/s  {_hms(elapsed)}'
        return line + ('  computing metrics' if final else '')

    def _emit(self, final: bool, force: bool) -> None:
        if self._tty:
            now = time.perf_counter()
            if not force and now - self._last_draw < self.min_interval:
                return
            self._last_draw = now
            self._write('\r' + self.text(final) + '\x1b[K' + ('\n' if final else ''))
            self._open = not final
            return
        # line mode: 0 %, every line_percent %, the last iteration
        if self._total:
            due = self._done >= self._next_line or final
            if due:
                step = self.line_percent * self._total / 100
                self._next_line = math.ceil((math.floor(self._done / step) + 1) * step)
        else:
            due = self._done % 50 == 0
        if due:
            self._write(self.text(final) + '\n')

    def _write(self, s: str) -> None:
        stream = self.stream
        stream.write(s)
        stream.flush()


__all__ = ['EvalProgressBarHook']
