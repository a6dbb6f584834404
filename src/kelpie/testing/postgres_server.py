"""A real, throwaway PostgreSQL server for tests and benchmarks.

:func:`start_postgres_server` runs ``initdb`` into a fresh temporary directory, starts the server on
a free loopback port with ``pg_ctl -w`` (which itself waits until the server accepts connections),
and creates the database ``kelpie``, owned by the superuser ``kelpie`` with ``trust``
authentication. :meth:`PostgresServer.stop` shuts it down and removes the directory.

PostgreSQL refuses to run as root. When this process is root, the server's programs run as the
``postgres`` system user if there is one, else as ``nobody``, and the temporary directory belongs
to that user.

The server runs with ``fsync`` and ``synchronous_commit`` on, so benchmarks measure durable
commits, as production would.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import pwd
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psycopg

from kelpie.errors import InvalidArgument, StorageUnavailable
from kelpie.limits import POSTGRES_CONNECT_TIMEOUT_S

__all__ = [
    "PostgresServer",
    "find_postgres_bin_dir",
    "running_postgres_server",
    "start_postgres_server",
]

# Tries at starting the server, each on a new port, when the port picked was taken in the meantime.
PORT_ATTEMPTS_LIMIT: Final = 5
STARTUP_TIMEOUT_S_DEFAULT: Final = 60.0
SHUTDOWN_TIMEOUT_S: Final = 60.0
# How much of the server log an error message quotes.
LOG_TAIL_CHARS: Final = 4_000

BIN_DIR_ENVIRONMENT_VARIABLE: Final = "KELPIE_PG_BIN"
REQUIRED_PROGRAMS: Final = ("initdb", "pg_ctl", "postgres")
DEBIAN_BIN_DIRS_GLOB: Final = "/usr/lib/postgresql/*/bin"
INSTALL_HINT: Final = (
    "install PostgreSQL (apt-get install postgresql) or set KELPIE_PG_BIN to the directory "
    "holding initdb, pg_ctl and postgres"
)
SUPERUSER: Final = "kelpie"
DATABASE: Final = "kelpie"
# Unprivileged users to run the server as when this process is root, in order of preference.
UNPRIVILEGED_USERS: Final = ("postgres", "nobody")
# Log lines that mean the port was taken between picking it and the server binding it.
PORT_TAKEN_MARKERS: Final = ("Address already in use", "could not create any TCP/IP sockets")

assert PORT_ATTEMPTS_LIMIT >= 1
assert STARTUP_TIMEOUT_S_DEFAULT > POSTGRES_CONNECT_TIMEOUT_S


@dataclass(frozen=True, kw_only=True)
class _RunAs:
    """The unprivileged account the server's programs run as when this process is root."""

    user: str
    uid: int
    gid: int


@dataclass(frozen=True, kw_only=True)
class PostgresServer:
    """A running throwaway server; call :meth:`stop` (or use :func:`running_postgres_server`)."""

    url: str
    """``postgresql://kelpie@127.0.0.1:PORT/kelpie``, usable by psycopg 3 and by Kelpie's storage."""
    data_dir: Path
    port: int
    root_dir: Path
    """The temporary directory holding ``data_dir``, the socket directory and the log."""
    log_path: Path
    bin_dir: Path
    run_as_user: str | None
    """The account the server runs as, or ``None`` when it runs as this process's user."""

    def stop(self) -> None:
        """Shut the server down (``pg_ctl stop -m fast``) and remove its temporary directory.

        Calling it again after it succeeded does nothing.

        Raises:
            StorageUnavailable: the server could not be stopped; its directory is left in place.
        """
        if self.data_dir.exists():
            run_as = _lookup_run_as(self.run_as_user)
            _stop_server(self.bin_dir, self.data_dir, self.log_path, run_as, mode="fast")
        shutil.rmtree(self.root_dir, ignore_errors=True)


def find_postgres_bin_dir() -> Path:
    """The directory holding PostgreSQL's ``initdb``, ``pg_ctl`` and ``postgres``.

    Looks at ``$KELPIE_PG_BIN`` if set (and only there), then at ``initdb`` on ``PATH`` (following
    symbolic links), then at ``/usr/lib/postgresql/<version>/bin``, highest version first.

    Raises:
        StorageUnavailable: ``$KELPIE_PG_BIN`` lacks one of the programs, or none was found.
    """
    configured = os.environ.get(BIN_DIR_ENVIRONMENT_VARIABLE)
    if configured:
        bin_dir = Path(configured)
        missing = _missing_programs(bin_dir)
        if missing:
            raise StorageUnavailable(
                f"{BIN_DIR_ENVIRONMENT_VARIABLE}={str(bin_dir)!r} lacks {', '.join(missing)}; "
                f"expected a directory holding {', '.join(REQUIRED_PROGRAMS)}"
            )
        return bin_dir
    candidates: list[Path] = []
    initdb_on_path = shutil.which("initdb")
    if initdb_on_path is not None:
        candidates.append(Path(initdb_on_path).resolve().parent)
    debian_bin_dirs = [Path(path) for path in glob.glob(DEBIAN_BIN_DIRS_GLOB)]
    candidates.extend(sorted(debian_bin_dirs, key=_version_key, reverse=True))
    for bin_dir in candidates:
        if not _missing_programs(bin_dir):
            return bin_dir
    searched = ", ".join(str(candidate) for candidate in candidates) or "nothing found"
    raise StorageUnavailable(
        f"PostgreSQL's server programs were not found on PATH or under {DEBIAN_BIN_DIRS_GLOB} "
        f"(looked at: {searched}); {INSTALL_HINT}"
    )


def start_postgres_server(
    *, base_dir: Path | None = None, startup_timeout_s: float = STARTUP_TIMEOUT_S_DEFAULT
) -> PostgresServer:
    """Start a fresh PostgreSQL server on a free loopback port, with an empty database ``kelpie``.

    Args:
        base_dir: where to create the server's temporary directory (default: the system's temporary
            directory). When this process is root, the unprivileged server user must be able to
            traverse every directory above it.
        startup_timeout_s: the limit for each step (``initdb``, ``pg_ctl start``, creating the
            database).

    Raises:
        InvalidArgument: ``startup_timeout_s`` is not positive.
        StorageUnavailable: the programs are missing, or a step failed; the message quotes the
            step's output and the tail of the server log.
    """
    if not startup_timeout_s > 0:
        raise InvalidArgument(f"startup_timeout_s must be a positive number, got {startup_timeout_s!r}")
    bin_dir = find_postgres_bin_dir()
    run_as = _choose_run_as()
    parent_dir = Path(base_dir if base_dir is not None else tempfile.gettempdir()).resolve()
    if run_as is not None:
        _check_traversable(parent_dir, run_as)
    root_dir = Path(tempfile.mkdtemp(prefix="kelpie-postgres-", dir=parent_dir))
    data_dir = root_dir / "data"
    socket_dir = root_dir / "socket"
    log_path = root_dir / "server.log"
    started = False
    try:
        socket_dir.mkdir(mode=0o700)
        if run_as is not None:
            for path in (root_dir, socket_dir):
                os.chown(path, run_as.uid, run_as.gid)
        os.chmod(root_dir, 0o700)
        _run_step(
            "initdb",
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",  # the cluster is thrown away; the server itself still syncs
            ],
            run_as=run_as,
            cwd=root_dir,
            timeout_s=startup_timeout_s,
            log_path=None,
        )
        port = _start_on_free_port(bin_dir, data_dir, socket_dir, log_path, run_as, startup_timeout_s)
        started = True
        _create_database(port, log_path, startup_timeout_s)
    except BaseException:
        if started:
            with contextlib.suppress(StorageUnavailable):
                _stop_server(bin_dir, data_dir, log_path, run_as, mode="immediate")
        shutil.rmtree(root_dir, ignore_errors=True)
        raise
    return PostgresServer(
        url=f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{DATABASE}",
        data_dir=data_dir,
        port=port,
        root_dir=root_dir,
        log_path=log_path,
        bin_dir=bin_dir,
        run_as_user=run_as.user if run_as is not None else None,
    )


@contextlib.contextmanager
def running_postgres_server(
    *, base_dir: Path | None = None, startup_timeout_s: float = STARTUP_TIMEOUT_S_DEFAULT
) -> Iterator[PostgresServer]:
    """A server that is stopped and removed when the ``with`` block exits.

    Raises:
        StorageUnavailable: as :func:`start_postgres_server` and :meth:`PostgresServer.stop`.
    """
    server = start_postgres_server(base_dir=base_dir, startup_timeout_s=startup_timeout_s)
    try:
        yield server
    finally:
        server.stop()


# --- private ------------------------------------------------------------------------------------


def _missing_programs(bin_dir: Path) -> list[str]:
    return [
        program
        for program in REQUIRED_PROGRAMS
        if not (bin_dir / program).is_file() or not os.access(bin_dir / program, os.X_OK)
    ]


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` → ``(15,)``; unparsable versions sort first."""
    try:
        return tuple(int(part) for part in bin_dir.parent.name.split("."))
    except ValueError:
        return (-1,)


def _choose_run_as() -> _RunAs | None:
    if os.geteuid() != 0:
        return None
    for user in UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            return _lookup_run_as(user)
    raise StorageUnavailable(
        f"PostgreSQL refuses to run as root and none of the users {', '.join(UNPRIVILEGED_USERS)} "
        "exists; create one (apt-get install postgresql creates 'postgres') or run as a non-root user"
    )


def _lookup_run_as(user: str | None) -> _RunAs | None:
    """The account ``user``; ``None`` for ``None``. Raises ``KeyError`` if there is no such user."""
    if user is None:
        return None
    entry = pwd.getpwnam(user)
    return _RunAs(user=user, uid=entry.pw_uid, gid=entry.pw_gid)


def _check_traversable(directory: Path, run_as: _RunAs) -> None:
    """Fail early, and clearly, if ``run_as`` could not reach a directory created in ``directory``."""
    for path in (directory, *directory.parents):
        mode = path.stat()
        if mode.st_uid == run_as.uid:
            allowed = mode.st_mode & stat.S_IXUSR
        elif mode.st_gid == run_as.gid:
            allowed = mode.st_mode & stat.S_IXGRP
        else:
            allowed = mode.st_mode & stat.S_IXOTH
        if not allowed:
            raise StorageUnavailable(
                f"the PostgreSQL server runs as user {run_as.user!r} (PostgreSQL refuses root), "
                f"which cannot traverse {str(path)!r}; choose a base_dir under /tmp"
            )


def _pick_free_port() -> int:
    """A loopback port free right now; another process may take it before the server binds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start_on_free_port(
    bin_dir: Path,
    data_dir: Path,
    socket_dir: Path,
    log_path: Path,
    run_as: _RunAs | None,
    startup_timeout_s: float,
) -> int:
    for attempt in range(1, PORT_ATTEMPTS_LIMIT + 1):
        port = _pick_free_port()
        server_options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-p {port}",
                f"-k {shlex.quote(str(socket_dir))}",
                "-c fsync=on",
                "-c synchronous_commit=on",
                "-c max_connections=200",
                "-c shared_buffers=128MB",
            ]
        )
        log_chars_before = _log_size(log_path)
        try:
            _run_step(
                "pg_ctl start",
                [
                    str(bin_dir / "pg_ctl"),
                    "start",
                    "-D",
                    str(data_dir),
                    "-w",
                    "-t",
                    str(max(1, math.ceil(startup_timeout_s))),
                    "-l",
                    str(log_path),
                    "-o",
                    server_options,
                ],
                run_as=run_as,
                cwd=data_dir.parent,
                # pg_ctl enforces -t itself; this only guards against pg_ctl hanging.
                timeout_s=startup_timeout_s + SHUTDOWN_TIMEOUT_S,
                log_path=log_path,
            )
        except StorageUnavailable:
            # A start that timed out may have left a postmaster coming up: make sure it is gone.
            with contextlib.suppress(StorageUnavailable):
                _stop_server(bin_dir, data_dir, log_path, run_as, mode="immediate")
            new_log = _read_log(log_path)[log_chars_before:]
            port_taken = any(marker in new_log for marker in PORT_TAKEN_MARKERS)
            if port_taken and attempt < PORT_ATTEMPTS_LIMIT:
                continue
            raise
        return port
    raise AssertionError("unreachable: the last attempt returns or raises")


def _create_database(port: int, log_path: Path, timeout_s: float) -> None:
    try:
        with psycopg.connect(
            host="127.0.0.1",
            port=port,
            user=SUPERUSER,
            dbname="postgres",
            autocommit=True,
            connect_timeout=max(1, math.ceil(min(timeout_s, POSTGRES_CONNECT_TIMEOUT_S))),
        ) as connection:
            connection.execute(f"CREATE DATABASE {DATABASE}")
    except psycopg.Error as error:
        raise StorageUnavailable(
            f"could not create database {DATABASE!r} on the PostgreSQL server at 127.0.0.1:{port}: "
            f"{error}{_log_tail_suffix(log_path)}"
        ) from error


def _stop_server(bin_dir: Path, data_dir: Path, log_path: Path, run_as: _RunAs | None, *, mode: str) -> None:
    """``pg_ctl stop``; succeeds if the server was already down."""
    command = [str(bin_dir / "pg_ctl"), "stop", "-D", str(data_dir), "-m", mode, "-w"]
    command += ["-t", str(math.ceil(SHUTDOWN_TIMEOUT_S))]
    try:
        _run_step(
            f"pg_ctl stop -m {mode}",
            command,
            run_as=run_as,
            cwd=data_dir.parent,
            timeout_s=SHUTDOWN_TIMEOUT_S * 2,
            log_path=log_path,
        )
    except StorageUnavailable:
        # pg_ctl status exits 3 when no server runs on data_dir (and 4 without a data directory).
        status = _run(
            [str(bin_dir / "pg_ctl"), "status", "-D", str(data_dir)],
            run_as=run_as,
            cwd=data_dir.parent,
            timeout_s=SHUTDOWN_TIMEOUT_S,
        )
        if status.returncode not in (3, 4):
            raise


def _run(
    command: Sequence[str], *, run_as: _RunAs | None, cwd: Path, timeout_s: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env=_server_environment(run_as),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        user=run_as.uid if run_as is not None else None,
        group=run_as.gid if run_as is not None else None,
        # Drop root's supplementary groups too.
        extra_groups=[] if run_as is not None else None,
    )


def _run_step(
    step: str,
    command: Sequence[str],
    *,
    run_as: _RunAs | None,
    cwd: Path,
    timeout_s: float,
    log_path: Path | None,
) -> None:
    """Run one step of starting or stopping the server; raise StorageUnavailable if it fails."""
    try:
        completed = _run(command, run_as=run_as, cwd=cwd, timeout_s=timeout_s)
    except subprocess.TimeoutExpired as error:
        raise StorageUnavailable(
            f"PostgreSQL {step} did not finish within {timeout_s:g} s: {shlex.join(command)}"
            f"{_log_tail_suffix(log_path) if log_path is not None else ''}"
        ) from error
    except OSError as error:
        raise StorageUnavailable(
            f"could not run PostgreSQL {step} ({shlex.join(command)}): {error}; {INSTALL_HINT}"
        ) from error
    if completed.returncode != 0:
        log_suffix = _log_tail_suffix(log_path) if log_path is not None else ""
        output = (completed.stdout + completed.stderr).strip()[-LOG_TAIL_CHARS:]
        raise StorageUnavailable(
            f"PostgreSQL {step} failed with exit status {completed.returncode}: "
            f"{shlex.join(command)}\n--- output ---\n{output}{log_suffix}"
        )


def _server_environment(run_as: _RunAs | None) -> Mapping[str, str]:
    """This process's environment, without PG* variables that could redirect the programs."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
    environment["LC_ALL"] = "C"
    if run_as is not None:
        # The server user cannot read root's home; keep programs from looking there.
        environment["HOME"] = "/"
    return environment


def _log_size(log_path: Path) -> int:
    return len(_read_log(log_path))


def _read_log(log_path: Path) -> str:
    try:
        return log_path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _log_tail_suffix(log_path: Path) -> str:
    text = _read_log(log_path).strip()
    if not text:
        return f"\n--- server log {log_path}: empty or missing ---"
    return f"\n--- tail of server log {log_path} ---\n{text[-LOG_TAIL_CHARS:]}"
