"""``kelpie serve`` as a real process: it announces readiness, answers, and stops cleanly on signals."""

from __future__ import annotations

import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

import kelpie

STARTUP_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 15.0
READY_MARKER = "serving on"


def _kelpie_command() -> list[str]:
    # The console script installed beside this interpreter, as a user runs it.
    script = Path(sys.executable).parent / "kelpie"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "kelpie"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServeProcess:
    """A ``kelpie serve`` child whose stdout lines are read on a thread, so waits have deadlines."""

    def __init__(self, arguments: list[str], stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        self._stderr_file = stderr_path.open("wb")
        self.process = subprocess.Popen(
            [*_kelpie_command(), "serve", *arguments],
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            text=True,
        )
        self.stdout_lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)  # end of output: the process closed stdout

    def wait_for_line(self, marker: str, timeout_s: float) -> str:
        """The first stdout line containing ``marker``; fails if output ends or the deadline passes."""
        deadline_s = time.monotonic() + timeout_s
        while (remaining_s := deadline_s - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining_s)
            except queue.Empty:
                break
            if line is None:
                pytest.fail(f"kelpie serve ended before {marker!r}; stderr:\n{self.stderr()}")
            self.stdout_lines.append(line)
            if marker in line:
                return line
        pytest.fail(f"no {marker!r} within {timeout_s} s; stderr:\n{self.stderr()}")

    def stderr(self) -> str:
        self._stderr_file.flush()
        return self.stderr_path.read_text(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        self._reader.join(timeout=SHUTDOWN_TIMEOUT_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr_file.close()


@pytest.fixture
def start_serve(tmp_path: Path) -> Iterator[Callable[[list[str]], ServeProcess]]:
    """Starts ``kelpie serve`` with the given arguments; kills whatever is still running at teardown."""
    started: list[ServeProcess] = []

    def start(arguments: list[str]) -> ServeProcess:
        serve_process = ServeProcess(arguments, tmp_path / f"stderr-{len(started)}.log")
        started.append(serve_process)
        return serve_process

    yield start
    for serve_process in started:
        serve_process.close()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serves_health_and_stops_cleanly_on_signal(
    start_serve: Callable[[list[str]], ServeProcess], tmp_path: Path, stop_signal: signal.Signals
) -> None:
    data_dir = tmp_path / "data"
    port = _free_port()
    server = start_serve(["--port", str(port), "--data-dir", str(data_dir)])

    ready_line = server.wait_for_line(READY_MARKER, STARTUP_TIMEOUT_S)
    assert f"http://127.0.0.1:{port}" in ready_line
    assert kelpie.__version__ in ready_line
    assert "sqlite:///" in ready_line

    for path in ("/v1/health/", "/v1/health"):
        response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10.0)
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "version": kelpie.__version__}

    server.process.send_signal(stop_signal)
    try:
        exit_code = server.process.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"kelpie serve did not stop within {SHUTDOWN_TIMEOUT_S} s of {stop_signal.name}")
    stderr = server.stderr()
    assert exit_code == 0, stderr
    assert "Traceback" not in stderr
    assert (data_dir / "kelpie.db").is_file()


def test_unsupported_storage_url_exits_2_without_traceback(tmp_path: Path) -> None:
    completed = subprocess.run(
        [*_kelpie_command(), "serve", "--port", str(_free_port()), "--storage", "bogus://x"],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 2
    assert "unsupported storage URL" in completed.stderr
    assert completed.stderr.startswith("error: ")
    assert "Traceback" not in completed.stderr
    assert completed.stdout == ""
