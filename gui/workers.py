"""Background work for the console: every call into the appliance that can take longer than a
frame (unlocking, answering, verifying, signing, exporting, running a job) runs in a worker thread,
so the window keeps painting and answering clicks.

A :class:`Task` runs ``fn(progress)`` on the window's own thread pool and reports back through Qt
signals, which Qt delivers on the GUI thread. ``progress`` is a :class:`Progress`: the function
reports ``(done, total, message)`` through it and may call :meth:`Progress.check` at safe points to
honour a cancel. Appliance calls that cannot be interrupted (a llama.cpp generation, a signature
plus audit write) keep running after a cancel, but their result is discarded and the task reports
``cancelled`` at once: the user gets control back, and what the appliance did is still audited.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from appliance.errors import MemoError


class Cancelled(Exception):
    """Raised by :meth:`Progress.check` when the user pressed Cancel."""


class Progress:
    """Handed to the work function: report progress, and look for a cancel at safe points."""

    def __init__(self, emit: Callable[[int, int, str], None]) -> None:
        self._emit = emit
        self._cancel = threading.Event()

    def __call__(self, done: int = 0, total: int = 0, message: str = "") -> None:
        self._emit(done, total, message)

    def say(self, message: str) -> None:
        self._emit(0, 0, message)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled()


class _Signals(QObject):
    progress = Signal(int, int, str)
    done = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    ended = Signal()  # after done, failed or cancelled: always exactly once
    exited = Signal()  # the worker thread has left the task (after a cancel, possibly much later)


class _Relay(QObject):
    """The task's signals as callers see them, re-emitted on the thread that made the task (the GUI's).

    Whatever is connected to them (bound methods, lambdas, closures) then runs on the GUI thread: a
    plain function connected straight to a signal emitted by the worker thread ran on the worker,
    racing the GUI thread (a Jobs-tab refresh after Pause was lost that way).
    """

    progress = Signal(int, int, str)
    done = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    ended = Signal()
    exited = Signal()

    def __init__(self, source: _Signals) -> None:
        super().__init__()
        source.progress.connect(self._progress)
        source.done.connect(self._done)
        source.failed.connect(self._failed)
        source.cancelled.connect(self._cancelled)
        source.ended.connect(self._ended)
        source.exited.connect(self._exited)

    @Slot(int, int, str)
    def _progress(self, done: int, total: int, message: str) -> None:
        self.progress.emit(done, total, message)

    @Slot(object)
    def _done(self, result: object) -> None:
        self.done.emit(result)

    @Slot(str)
    def _failed(self, message: str) -> None:
        self.failed.emit(message)

    @Slot()
    def _cancelled(self) -> None:
        self.cancelled.emit()

    @Slot()
    def _ended(self) -> None:
        self.ended.emit()

    @Slot()
    def _exited(self) -> None:
        self.exited.emit()


class Task(QRunnable):
    """One unit of background work. Connect to ``signals`` before :meth:`TaskRunner.start`."""

    def __init__(self, name: str, fn: Callable[[Progress], Any]) -> None:
        super().__init__()
        self.setAutoDelete(False)  # the runner keeps the Python object alive until it ends
        self.name = name
        self.fn = fn
        self._emit = _Signals()  # emitted by the worker thread
        self.signals = _Relay(self._emit)  # what callers connect to: delivered on the GUI thread
        self.progress = Progress(self._emit.progress.emit)
        self._finished = threading.Event()
        self._reported = threading.Lock()
        self._has_reported = False

    def _report(self, emit: Callable[[], None]) -> None:
        with self._reported:
            if self._has_reported:
                return
            self._has_reported = True
        emit()
        self._emit.ended.emit()

    def cancel(self) -> None:
        """Ask the work to stop; the task reports ``cancelled`` at once and discards any result."""
        self.progress.cancel()
        self._report(self._emit.cancelled.emit)

    @property
    def running(self) -> bool:
        return not self._has_reported

    @Slot()
    def run(self) -> None:
        emit: Callable[[], None]
        try:
            result = self.fn(self.progress)
        except Cancelled:
            emit = self._emit.cancelled.emit
        except MemoError as exc:  # an operator-facing one-line error, shown as is
            message = str(exc)
            emit = lambda: self._emit.failed.emit(message)  # noqa: E731
        except Exception as exc:  # noqa: BLE001 - a worker must never take the console down
            traceback.print_exc()
            message = f"{type(exc).__name__}: {exc}"
            emit = lambda: self._emit.failed.emit(message)  # noqa: E731
        else:
            emit = self._emit.cancelled.emit if self.progress.cancelled else (lambda: self._emit.done.emit(result))
        self._finished.set()
        self._report(emit)
        self._emit.exited.emit()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the thread has left :meth:`run` (tests, shutdown)."""
        return self._finished.wait(timeout)


class TaskRunner(QObject):
    """The window's thread pool; keeps each task alive until it has reported."""

    def __init__(self, parent: QObject | None = None, threads: int = 4) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(threads)
        self._live: dict[QObject, Task] = {}

    def start(self, name: str, fn: Callable[[Progress], Any], on_done: Callable[[Any], None] | None = None,
              on_error: Callable[[str], None] | None = None) -> Task:
        task = Task(name, fn)
        if on_done:
            task.signals.done.connect(on_done)
        if on_error:
            task.signals.failed.connect(on_error)
        self._live[task.signals] = task
        task.signals.exited.connect(self._reap)  # a QObject method: delivered on the GUI thread
        self.pool.start(task)
        return task

    @Slot()
    def _reap(self) -> None:
        self._live.pop(self.sender(), None)

    def live(self) -> list[Task]:
        """Tasks whose thread has not yet left them."""
        return list(self._live.values())

    def busy(self) -> bool:
        return bool(self._live) or self.pool.activeThreadCount() > 0

    def wait_all(self, msecs: int = 30000) -> bool:
        return self.pool.waitForDone(msecs)


class BusyBar(QWidget):
    """Progress of a tab's current task, with a Cancel button; hidden while idle."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel()
        self.bar = QProgressBar()
        self.bar.setMaximumWidth(220)
        self.cancel_button = QPushButton("Cancel")
        layout.addWidget(self.label, 1)
        layout.addWidget(self.bar)
        layout.addWidget(self.cancel_button)
        self.task: Task | None = None
        self.cancel_button.clicked.connect(self._cancel)
        self.setVisible(False)

    def follow(self, task: Task, label: str) -> None:
        self.task = task
        self.label.setText(label)
        self.bar.setRange(0, 0)  # busy until the work reports a total
        self.cancel_button.setEnabled(True)
        self.setVisible(True)
        task.signals.progress.connect(self._progress)
        task.signals.ended.connect(self._ended)

    def _progress(self, done: int, total: int, message: str) -> None:
        if total > 0:
            self.bar.setRange(0, total)
            self.bar.setValue(done)
        if message:
            self.label.setText(message)

    def _cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _ended(self) -> None:
        self.task = None
        self.setVisible(False)
