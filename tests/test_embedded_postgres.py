"""The embedded PostgreSQL stops with the last process that uses it: after SIGTERM or SIGINT, after a stop
signal that comes while it starts, and after a user that died without letting go (issue 7)."""

from __future__ import annotations

import signal

import pytest

from tests.cli_process import Cli, cli_sandbox, process_gone, wait_until


@pytest.fixture
def start_cli():
    with cli_sandbox() as start:
        yield start


def assert_postgres_stopped(cli: Cli, postmaster: int, *, forgotten: tuple[int, ...]) -> None:
    wait_until(lambda: process_gone(postmaster), timeout=5, what=f"postmaster {postmaster} to exit")
    assert cli.postmaster_pid() is None, "postmaster.pid is left behind: PostgreSQL did not shut down cleanly"
    assert not set(cli.recorded_users()) & set(forgotten), cli.recorded_users()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_stop_signal_stops_the_embedded_postgres_and_clears_the_pid_record(start_cli, sig) -> None:
    server = start_cli("serve")
    server.wait_serving()
    postmaster = server.postmaster_pid()
    assert postmaster is not None and server.recorded_users() == [server.pid]

    status, seconds = server.stop(sig)

    assert status == 0, server.output
    assert seconds < 5, f"took {seconds:.1f}s to stop"
    assert_postgres_stopped(server, postmaster, forgotten=(server.pid,))
    assert "embedded_postgres_stopped" in server.output


def test_a_killed_user_is_forgotten_at_next_start_so_postgres_stops_with_the_last_live_one(start_cli) -> None:
    killed = start_cli("serve")
    killed.wait_serving()
    postmaster = killed.postmaster_pid()
    killed.process.kill()
    killed.process.wait()
    # What SIGKILL (or a crash) leaves: the server running, the dead pid on the record.
    assert not process_gone(postmaster) and killed.recorded_users() == [killed.pid]

    server = start_cli("serve")
    server.wait_serving()
    assert server.postmaster_pid() == postmaster, "the running server is used again, not a second one"
    assert server.recorded_users() == [server.pid]
    assert f"embedded_postgres_dead_users_forgotten dir={server.pg_dir} pids={killed.pid}" in server.output

    status, _ = server.stop(signal.SIGTERM)

    assert status == 0, server.output
    assert_postgres_stopped(server, postmaster, forgotten=(killed.pid, server.pid))


def test_postgres_stops_with_the_last_live_user_when_another_was_killed_meanwhile(start_cli) -> None:
    killed = start_cli("serve")
    killed.wait_serving()
    postmaster = killed.postmaster_pid()
    server = start_cli("serve")
    server.wait_serving()
    assert sorted(server.recorded_users()) == sorted([killed.pid, server.pid])
    killed.process.kill()
    killed.process.wait()

    status, _ = server.stop(signal.SIGTERM)

    assert status == 0, server.output
    assert_postgres_stopped(server, postmaster, forgotten=(killed.pid, server.pid))


def test_a_stop_signal_while_postgres_starts_leaves_no_server_behind(start_cli) -> None:
    server = start_cli("serve")
    # The pg directory appears as the embedded server starts to initialise; initdb takes seconds.
    wait_until(lambda: server.pg_dir.exists() or server.process.poll() is not None, timeout=20, what="pg directory")

    status, _ = server.stop(signal.SIGTERM, timeout=20)

    assert status == 0, server.output
    assert "process_stopped command=serve signal=SIGTERM" in server.output
    wait_until(lambda: server.postmaster_pid() is None, timeout=5, what="postmaster.pid to go")
    assert server.recorded_users() == []
