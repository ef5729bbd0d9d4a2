"""The command line: errors a user can fix end in one stderr line and exit 1, quickly, without the password."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest
from conftest import TAP, select_all


def run(args, timeout=30):
    started = time.monotonic()
    result = subprocess.run([*TAP, *args], capture_output=True, timeout=timeout)
    return result.returncode, result.stdout.decode(), result.stderr.decode(), time.monotonic() - started


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tap-postgres: error:")]


def test_wrong_password_is_one_line_naming_the_password(db, tmp_path):
    config = dict(db.config, password="not-the-password")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code, stdout, stderr, seconds = run(["--config", str(path), "--discover"])
    assert code == 1
    assert stdout == ""
    assert error_lines(stderr) == [
        f'tap-postgres: error: PostgreSQL at 127.0.0.1:{db.server.port} rejected user "postgres": '
        'password authentication failed; check "user" and "password" in the config'
    ]
    assert "not-the-password" not in stderr
    assert seconds < 10


def test_a_role_whose_name_contains_the_password_is_named_whole(db, tmp_path):
    """With password "reader", the line named role "catalog_reader" as "catalog_<password hidden>"."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(db.config, user="catalog_reader", password="reader")))
    code, _, stderr, _ = run(["--config", str(path), "--discover"])
    assert code == 1
    assert error_lines(stderr) == [
        f'tap-postgres: error: PostgreSQL at 127.0.0.1:{db.server.port} rejected user "catalog_reader": '
        'password authentication failed; check "user" and "password" in the config'
    ]


def test_unreachable_port_fails_within_ten_seconds(db, tmp_path):
    from pgcluster import free_port

    port = free_port()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(db.config, port=port)))
    code, stdout, stderr, seconds = run(["-c", str(path), "-d"])
    assert code == 1
    assert error_lines(stderr) == [
        f"tap-postgres: error: connection refused by 127.0.0.1:{port}: is PostgreSQL running there, "
        'and are "host" and "port" right?'
    ]
    assert seconds < 10


def test_missing_dbname_names_the_key(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"host": "127.0.0.1", "user": "u", "password": "secret-pw"}))
    code, _, stderr, seconds = run(["--config", str(path), "--discover"])
    assert code == 1
    assert error_lines(stderr) == [
        'tap-postgres: error: config key "dbname" is missing: add it to the config file or set TAP_POSTGRES_DBNAME '
        "(Database to discover and sync.)"
    ]
    assert "secret-pw" not in stderr
    assert seconds < 10


def test_malformed_json_config_names_file_and_position(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"host": "127.0.0.1",')
    code, _, stderr, _ = run(["--config", str(path), "--discover"])
    assert code == 1
    assert error_lines(stderr) == [
        f"tap-postgres: error: the config file {path} is not valid JSON (line 1, column 22: "
        "Expecting property name enclosed in double quotes)"
    ]


def test_missing_database_names_dbname(db, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(db.config, dbname="no_such_db")))
    code, _, stderr, _ = run(["--config", str(path), "--discover"])
    assert code == 1
    assert error_lines(stderr) == [
        f'tap-postgres: error: database "no_such_db" does not exist on 127.0.0.1:{db.server.port}: '
        'check "dbname" in the config'
    ]


def test_use_secondary_without_host_is_a_config_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"host": "h", "user": "u", "dbname": "d", "use_secondary": "true"}))
    code, _, stderr, _ = run(["--config", str(path), "--discover"])
    assert code == 1
    assert 'config key "use_secondary" is true but "secondary_host" and "secondary_port"' in stderr


def test_later_config_file_wins(db, tmp_path):
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(dict(db.config, dbname="no_such_db")))
    right = tmp_path / "right.json"
    right.write_text(json.dumps({"dbname": db.name}))
    code, stdout, stderr, _ = run(["--config", str(wrong), "--config", str(right), "--discover"])
    assert code == 0, stderr
    assert json.loads(stdout) == {"streams": []}


def test_about_json_lists_every_setting_with_description_and_default():
    from tap_postgres.config import SETTINGS

    code, stdout, _, _ = run(["--about", "--format", "json"])
    assert code == 0
    about = json.loads(stdout)
    settings = about["settings"]["properties"]
    assert set(settings) == {setting.name for setting in SETTINGS}
    for setting in SETTINGS:
        assert settings[setting.name]["description"] == setting.description
        if setting.default is not None:
            assert settings[setting.name]["default"] == setting.default
    assert settings["password"]["writeOnly"] is True
    assert set(about["settings"]["required"]) == {"host", "user", "dbname"}


def test_sync_without_catalog_says_how_to_make_one(db, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(db.config))
    code, _, stderr, _ = run(["--config", str(path)])
    assert code == 1
    assert error_lines(stderr) == [
        "tap-postgres: error: no catalog given: run with --discover to write one, select streams, "
        "then pass it with --catalog (or --properties)"
    ]


def test_malformed_catalog_and_state_are_one_line_errors(db, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(db.config))
    catalog = tmp_path / "catalog.json"
    catalog.write_text('{"streams": {}}')
    code, _, stderr, _ = run(["--config", str(config), "--properties", str(catalog)])
    assert code == 1
    assert error_lines(stderr) == [
        'tap-postgres: error: the catalog must be a JSON object with a "streams" list: run --discover to make one'
    ]
    catalog.write_text('{"streams": []}')
    state = tmp_path / "state.json"
    state.write_text('{"bookmarks": []}')
    code, _, stderr, _ = run(["--config", str(config), "--catalog", str(catalog), "--state", str(state)])
    assert code == 1
    assert error_lines(stderr) == [
        'tap-postgres: error: "bookmarks" in the state file must map each stream id to an object: '
        "fix or remove the file"
    ]


def test_password_from_the_environment_as_about_advertises(db, tmp_path):
    config = {key: value for key, value in db.config.items() if key != "password"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    environment = dict(os.environ, TAP_POSTGRES_PASSWORD=db.config["password"])
    result = subprocess.run([*TAP, "--config", str(path), "--discover"], capture_output=True, env=environment)
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["streams"] is not None
    about = subprocess.run([*TAP, "--about"], capture_output=True, check=True).stdout.decode()
    assert "Environment Variable: TAP_POSTGRES_PASSWORD" in about


def test_nul_in_the_password_is_one_line(db, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(db.config, password="se\x00cret-xyz")))
    code, stdout, stderr, _ = run(["--config", str(path), "--discover"])
    assert code == 1
    assert error_lines(stderr) == [
        'tap-postgres: error: config key "password" holds a NUL character, which libpq cannot send: remove it'
    ]
    assert "Traceback" not in stderr and "cret-xyz" not in stderr


def test_version_names_the_tap_not_the_sdk():
    code, stdout, _, _ = run(["--version"])
    assert code == 0
    assert stdout.strip().startswith("tap-postgres ")
    assert "Meltano SDK" not in stdout


def test_an_unimplemented_sdk_setting_stops_before_any_record(db, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(db.config, faker_config={"locale": "en_US"})))
    code, stdout, stderr, _ = run(["--config", str(path), "--discover"])
    assert code == 1
    assert stdout == ""
    assert len(error_lines(stderr)) == 1
    assert 'config key "faker_config" is a singer-sdk feature this tap does not implement yet' in stderr


def test_a_connection_error_never_shows_the_secret_sslkey_path(db, tmp_path):
    # libpq names the key file in its error; the path is as secret as the setting says
    import pgcluster

    ssl_dir = db.server.data_dir / "test-ssl"  # a place the server's OS user can read
    ssl_dir.mkdir(exist_ok=True)
    cert, key = ssl_dir / "server.crt", ssl_dir / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
        + ["-days", "2", "-subj", "/CN=localhost"],
        check=True,
        capture_output=True,
    )
    key.chmod(0o600)
    for path in (ssl_dir, cert, key):
        pgcluster._chown_to_server_user(path)
    settings = {"ssl_cert_file": str(cert), "ssl_key_file": str(key), "ssl": "on"}
    try:
        for name, value in settings.items():
            db.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        db.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)
        secret_key = "/srv/keys/payments-prod-client.key"
        path = tmp_path / "config.json"
        path.write_text(json.dumps(dict(db.config, sslmode="require", sslcert=str(cert), sslkey=secret_key)))
        code, _, stderr, _ = run(["--config", str(path), "--discover"])
    finally:
        for name in settings:
            db.execute(f"ALTER SYSTEM RESET {name}")
        db.execute("SELECT pg_reload_conf()")
    assert code == 1
    assert len(error_lines(stderr)) == 1
    assert "private key file" in stderr and "<sslkey hidden>" in stderr
    assert "payments-prod-client" not in stderr


def interrupted_in_python_start_up(code: int, stderr: str) -> bool:
    """Tell whether the signal came while the interpreter started, before any code of the tap ran.

    Nothing of the tap can catch it there (tests/test_cli.py's window, about 20 ms): Python dies of the
    signal, prints a KeyboardInterrupt from site, or site drops it in a .pth file and the run goes on.
    """
    if "Error processing line" in stderr or "init_import_site" in stderr:  # site, in a .pth file
        return True
    ran = "tap-postgres" in stderr or re.search(r'File "[^"]*/tap_postgres/', stderr)  # a line or a frame of the tap
    return code in (1, -signal.SIGINT) and not ran


def default_sigint() -> None:
    """Give the tap SIGINT's default action, as a terminal's shell does. A test runner started in the
    background by a non-interactive shell (`bash -c '... &'`) ignores SIGINT and its children inherit
    that; an ignored Ctrl-C before the tap's handler is in place then rightly does nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("mode", ["discover", "sync"])
def test_ctrl_c_at_any_moment_of_the_start_is_one_line_and_exit_130(db, tmp_path, mode):
    """Ctrl-C in the first 150 ms gave a KeyboardInterrupt traceback through the imports, exit 0 when the
    exception was dropped, or the line and death by SIGINT after an exec()."""
    db.execute("DROP TABLE IF EXISTS interrupted; CREATE TABLE interrupted (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO interrupted SELECT g, repeat('x', 100) FROM generate_series(1, 200000) g")
    config = db.write_json("interrupted-config.json", db.config)
    args = ["--discover"]
    if mode == "sync":
        catalog = select_all(db.discover(), only={"public-interrupted"})
        args = ["--catalog", str(db.write_json("interrupted-catalog.json", catalog))]
    started = time.monotonic()
    subprocess.run([*TAP, "--config", str(config), *args], capture_output=True, check=True)
    whole_run = time.monotonic() - started
    delays = [delay / 1000 for delay in range(0, int(min(150, whole_run * 600)), 5)]
    problems = []
    for delay in delays:
        tap = subprocess.Popen(
            [*TAP, "--config", str(config), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=default_sigint,
        )
        time.sleep(delay)
        tap.send_signal(signal.SIGINT)
        stdout, stderr = (stream.decode(errors="replace") for stream in tap.communicate(timeout=60))
        if interrupted_in_python_start_up(tap.returncode, stderr):
            continue
        lines = error_lines(stderr)
        if tap.returncode != 130 or "Traceback" in stderr or len(lines) != 1 or not stderr.endswith(lines[0] + "\n"):
            problems.append(f"{delay * 1000:.0f} ms: exit {tap.returncode}, stderr ends {stderr[-300:]!r}")
        elif mode == "sync" and stdout and not stdout.endswith("\n"):
            problems.append(f"{delay * 1000:.0f} ms: half a line on stdout: {stdout[-100:]!r}")
    assert not problems, f"{len(problems)} of {len(delays)} delays:\n" + "\n".join(problems)
