"""The replication slot LOG_BASED reads: its pipelinewise name, its health, and how far it is confirmed."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable

import psycopg2
from psycopg2 import extensions

from tap_postgres.config import Config
from tap_postgres.connection import connect_replication
from tap_postgres.errors import ReplicationError
from tap_postgres.server_versions import has_failover_slots, version_text
from tap_postgres.state import int_to_lsn

LOGGER = logging.getLogger("tap-postgres")

# The output plugins LOG_BASED reads; a new slot gets wal2json unless output_plugin says otherwise.
PLUGINS = ("wal2json", "pgoutput")
DEFAULT_PLUGIN = "wal2json"


def slot_names(config: Config) -> list[str]:
    """Return the slot names to look for, in pipelinewise's order: `pipelinewise_<dbname>`, then with tap_id."""
    names = [_clean_slot_name(f"pipelinewise_{config.dbname}")]
    if config.tap_id:
        names.append(_clean_slot_name(f"pipelinewise_{config.dbname}_{config.tap_id}"))
    return names


def _clean_slot_name(name: str) -> str:
    return re.sub("[^a-z0-9_]", "_", name.lower())


@dataclasses.dataclass(frozen=True)
class Slot:
    """A logical replication slot as pg_replication_slots shows it."""

    name: str
    plugin: str
    database: str
    active_pid: int | None
    wal_status: str | None  # reserved, extended, unreserved or lost (PostgreSQL 13+)
    safe_wal_size: int | None
    confirmed_flush: int
    lag_bytes: int  # how far the current WAL is ahead of confirmed_flush
    failover: bool | None = None  # a failover slot (PostgreSQL 17+; None before)
    synced: bool | None = None  # a standby's copy of a primary's failover slot (17+)


def find_slot(
    conn: extensions.connection,
    config: Config,
    prepare: Callable[[str, str], None],
    publication_steps: Callable[[str], str | None],
    recorded: set[str] | None = None,
) -> Slot:
    """Check wal_level and the slot, creating it if the config allows, and return it.

    `prepare(plugin, slot_name)` runs before a slot is created, and for an existing one: what the
    plugin needs first (pgoutput's publication) is then there before the slot decodes anything.
    `publication_steps(slot_name)` gives the statements that create pgoutput's publication, or
    None when it exists: a missing slot's error names them first.
    """
    with conn.cursor() as cur:
        cur.execute("SHOW wal_level")
        wal_level = cur.fetchone()[0]
    if wal_level != "logical":
        raise ReplicationError(
            f"wal_level is {wal_level}, LOG_BASED needs logical: set wal_level = logical in postgresql.conf "
            "(rds.logical_replication = 1 on RDS) and restart PostgreSQL"
        )
    if config.slot_failover and not has_failover_slots(conn.server_version):
        raise ReplicationError(
            f"slot_failover needs PostgreSQL 17 or later, this server is {version_text(conn.server_version)}: "
            "unset slot_failover (a standby of this version cannot keep a logical slot in step)"
        )
    name, slot = locate_slot(conn, config, recorded)
    if slot is not None:
        _check_slot(slot, config)
        prepare(slot.plugin, slot.name)
        if config.slot_failover and not slot.failover:
            slot = _make_failover_slot(conn, config, slot)
        return slot
    plugin = choose_plugin(conn, config)
    if not config.create_replication_slot:
        create_slot = f"SELECT pg_create_logical_replication_slot('{name}', '{plugin}')"
        if plugin == "pgoutput":
            first = publication_steps(name)
            steps = f"{first}; then the slot: {create_slot}" if first else f"the publication is there; {create_slot}"
            raise ReplicationError(
                f'replication slot "{name}" does not exist: create the publication first (pgoutput reads it as of '
                f'each change), then the slot: {steps}; or set "create_replication_slot": true'
            )
        raise ReplicationError(
            f'replication slot "{name}" does not exist: create it with {create_slot}; '
            'or set "create_replication_slot": true'
        )
    prepare(plugin, name)
    try:
        slot = _create_slot(conn, name, plugin, config.slot_failover)
    except PluginNotInstalledError:
        if config.output_plugin:
            raise
        # wal2json was only our default: a server may allow it and still not have it installed
        LOGGER.info(
            "output_plugin is unset and there is no slot yet: using pgoutput, as wal2json is not installed on "
            "the server (set output_plugin to wal2json once it is, to read what pipelinewise reads)"
        )
        prepare("pgoutput", name)
        slot = _create_slot(conn, name, "pgoutput", config.slot_failover)
    _check_slot(slot, config)
    return slot


def choose_plugin(conn: extensions.connection, config: Config) -> str:
    """Return the plugin of a new slot: output_plugin, else wal2json (pipelinewise's) where the server allows
    it, else pgoutput, which is built in and always allowed; say which and why."""
    if config.output_plugin:
        return config.output_plugin
    with conn.cursor() as cur:
        cur.execute("SELECT setting FROM pg_settings WHERE name = 'output_plugin_libraries'")
        row = cur.fetchone()
    conn.rollback()
    allowed = None if row is None else [name.strip() for name in row[0].split(",")]
    if allowed is not None and DEFAULT_PLUGIN not in allowed:
        LOGGER.info(
            "output_plugin is unset and there is no slot yet: using pgoutput, as the server's "
            "output_plugin_libraries (%s) does not allow wal2json",
            row[0],
        )
        return "pgoutput"
    LOGGER.info(
        "output_plugin is unset and there is no slot yet: using wal2json, what pipelinewise reads, which the "
        "server allows (set output_plugin to pgoutput to use it instead)"
    )
    return DEFAULT_PLUGIN


def locate_slot(
    conn: extensions.connection, config: Config, recorded: set[str] | None = None
) -> tuple[str, Slot | None]:
    """Return the name of the slot this pipeline reads, and the slot when it exists.

    `recorded` holds the slots the state's LOG_BASED bookmarks name (their origin), or None when
    the state holds no LOG_BASED position at all (the pipeline never read a slot). A recorded slot
    that exists is the one; else pipelinewise's order: the first of slot_names that exists, else
    the last name, which a new slot gets. Except for a pipeline with a tap_id that never read a
    slot: `pipelinewise_<dbname>` (the name from before tap_id) is then most likely another
    pipeline's, and reading it would confirm that pipeline's changes away, so its own slot is used
    when it exists, and otherwise the run stops with one line.
    """
    names = slot_names(config)
    existing = {name: slot for name in names if (slot := _read_slot(conn, name)) is not None}
    for name in names:
        if recorded and name in recorded and name in existing:
            return name, existing[name]
    if recorded is None and config.tap_id and names[0] in existing:
        if names[-1] in existing:
            return names[-1], existing[names[-1]]
        raise ReplicationError(
            f'replication slot "{names[0]}" exists, but this pipeline (tap_id {json.dumps(config.tap_id)}) holds '
            "no LOG_BASED bookmark yet: that name is PipelineWise's from before tap_id, most likely another "
            "pipeline's slot, and reading it would take that pipeline's changes. Give this pipeline its own: "
            f"SELECT pg_create_logical_replication_slot('{names[-1]}', '<plugin>') (pgoutput: after its "
            f'publication), then rerun; or, if "{names[0]}" is this pipeline\'s and nothing else reads it, drop it '
            "and rerun"
        )
    for name in names:
        if name in existing:
            return name, existing[name]
    return names[-1], None


def log_slot_health(conn: extensions.connection, slot: Slot, config: Config, when: str) -> None:
    """Log the slot's health as one `slot_health` line a scheduler can grep, and warn when it holds too much WAL.

    `lag_bytes` is the WAL the server keeps for the slot (from its confirmed position to the
    current one); `wal_status` `unreserved` means the server may soon remove WAL the slot needs.
    """
    current = _read_slot(conn, slot.name) or slot
    facts = (
        f"slot_health when={when} slot={current.name} lag_bytes={current.lag_bytes} "
        f"wal_status={current.wal_status or 'unknown'} "
        f"safe_wal_size={'unlimited' if current.safe_wal_size is None else current.safe_wal_size} "
        f"confirmed_flush_lsn={int_to_lsn(current.confirmed_flush)}"
    )
    if current.failover is not None:  # PostgreSQL 17+
        facts += f" failover={str(current.failover).lower()} synced={str(bool(current.synced)).lower()}"
    LOGGER.info("%s", facts)
    threshold = config.slot_lag_warning_bytes
    if threshold is not None and current.lag_bytes > threshold:
        LOGGER.warning(
            "slot_lag_exceeded slot=%s lag_bytes=%d threshold_bytes=%d: the server keeps %.1f GiB of WAL for this "
            "slot; run the pipeline more often, or check that the target saves its state",
            current.name,
            current.lag_bytes,
            threshold,
            current.lag_bytes / 2**30,
        )
    if current.wal_status == "unreserved":
        LOGGER.warning(
            "slot_wal_unreserved slot=%s: the slot holds more WAL than max_slot_wal_keep_size and will lose it at "
            "the next checkpoint unless it is read: keep this run going, or raise max_slot_wal_keep_size",
            current.name,
        )


def _read_slot(conn: extensions.connection, name: str) -> Slot | None:
    # to_jsonb keeps the query valid on servers whose view lacks the PostgreSQL 13 columns
    with conn.cursor() as cur:
        cur.execute(
            "SELECT to_jsonb(s), (confirmed_flush_lsn - '0/0')::bigint, "
            "(pg_current_wal_lsn() - confirmed_flush_lsn)::bigint "
            "FROM pg_replication_slots AS s WHERE slot_name = %s",
            (name,),
        )
        row = cur.fetchone()
    conn.rollback()
    if row is None:
        return None
    slot, confirmed_flush, lag_bytes = row
    return Slot(
        name=name,
        plugin=slot.get("plugin") or "",
        database=slot.get("database") or "",
        active_pid=slot.get("active_pid"),
        wal_status=slot.get("wal_status"),
        safe_wal_size=slot.get("safe_wal_size"),
        confirmed_flush=confirmed_flush or 0,
        lag_bytes=lag_bytes or 0,
        failover=slot.get("failover"),
        synced=slot.get("synced"),
    )


def _create_slot(conn: extensions.connection, name: str, plugin: str, failover: bool) -> Slot:
    LOGGER.info("Creating replication slot %s with %s%s", name, plugin, " (a failover slot)" if failover else "")
    try:
        with conn.cursor() as cur:
            if failover:  # arguments: temporary, two-phase, failover
                cur.execute("SELECT pg_create_logical_replication_slot(%s, %s, false, false, true)", (name, plugin))
            else:
                cur.execute("SELECT pg_create_logical_replication_slot(%s, %s)", (name, plugin))
        conn.commit()
    except psycopg2.Error as exc:
        conn.rollback()
        raise describe_plugin_failure(exc, f'cannot create replication slot "{name}"', plugin, name) from None
    return _read_slot(conn, name)


def _make_failover_slot(conn: extensions.connection, config: Config, slot: Slot) -> Slot:
    """Turn an existing slot into a failover slot (ALTER_REPLICATION_SLOT, a replication command of 17)."""
    LOGGER.info("Making replication slot %s a failover slot (slot_failover)", slot.name)
    replication = connect_replication(config)
    try:
        with replication.cursor() as cur:
            cur.execute(f'ALTER_REPLICATION_SLOT "{slot.name}" ( FAILOVER true )')
    except psycopg2.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReplicationError(
            f'cannot make replication slot "{slot.name}" a failover slot: {first_line}: stop whatever reads it, '
            "or unset slot_failover"
        ) from None
    finally:
        replication.close()
    return _read_slot(conn, slot.name)


def _check_slot(slot: Slot, config: Config) -> None:
    if slot.plugin not in PLUGINS:
        raise ReplicationError(
            f'replication slot "{slot.name}" uses the {slot.plugin} plugin; LOG_BASED reads {" or ".join(PLUGINS)}: '
            f"drop it and create it with SELECT pg_create_logical_replication_slot('{slot.name}', 'wal2json')"
        )
    if config.output_plugin and slot.plugin != config.output_plugin:
        raise ReplicationError(
            f'replication slot "{slot.name}" uses {slot.plugin}, output_plugin is {config.output_plugin}: leave '
            f"output_plugin unset to go on with {slot.plugin}, or move the pipeline to {config.output_plugin} as "
            'the README\'s "Moving from wal2json to pgoutput" says'
        )
    if slot.database != config.dbname:
        raise ReplicationError(
            f'replication slot "{slot.name}" belongs to database "{slot.database}", not "{config.dbname}": '
            'set "tap_id" to give this pipeline a slot of its own'
        )
    if slot.wal_status == "lost":
        raise ReplicationError(
            f'replication slot "{slot.name}" has lost WAL it needed (wal_status lost, max_slot_wal_keep_size): '
            "drop and create it again, then remove the LOG_BASED bookmarks from the state to copy the tables anew"
        )
    if slot.active_pid is not None:
        raise ReplicationError(
            f'replication slot "{slot.name}" is in use by server process {slot.active_pid}: '
            "another run of this pipeline is still going; wait for it or stop it"
        )


def confirm_up_to(conn: extensions.connection, slot: Slot, lsn: int) -> Slot:
    """Confirm the slot up to `lsn` (what the target has saved), so the server may free older WAL.

    Always with pg_replication_slot_advance while no walsender holds the slot, never by a status
    update on the replication connection: once psycopg2 has been given a flush position, it
    reports the walsender's own position on a keepalive whenever the last message it received
    started at or before that position, which a transaction begun earlier and committed later
    does, and that could confirm changes the target has not saved yet (WalPass reconnects instead).
    """
    if lsn <= slot.confirmed_flush:
        return slot
    LOGGER.info("Confirming replication slot %s up to %s, the LSN in the state", slot.name, int_to_lsn(lsn))
    with conn.cursor() as cur:
        cur.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot.name, int_to_lsn(lsn)))
    conn.commit()
    return dataclasses.replace(slot, confirmed_flush=lsn)


def wait_until_free(conn: extensions.connection, slot: Slot, timeout: float = 30.0) -> None:
    """Wait until no walsender holds the slot: one leaves it a moment after its connection closes."""
    deadline = time.monotonic() + timeout
    while (current := _read_slot(conn, slot.name)) is not None and current.active_pid is not None:
        if time.monotonic() > deadline:
            return  # pg_replication_slot_advance then names the process holding it
        time.sleep(0.05)


def current_wal_lsn(conn: extensions.connection) -> int:
    """Return the server's current WAL write position."""
    with conn.cursor() as cur:
        cur.execute("SELECT (pg_current_wal_lsn() - '0/0')::bigint")
        return cur.fetchone()[0]


def younger_publication_error(cause: str, slot_name: str) -> ReplicationError:
    """The error for changes read before the publication existed: only a new slot and copy recover them."""
    return ReplicationError(
        f"{cause}: the publication is younger than the slot (created, recreated or named by "
        "publication_name after it), and pgoutput reads it as of each change, so no rerun can read the changes "
        "before it. The way out is a new slot after the publication and a new copy of the LOG_BASED streams: "
        f"run SELECT pg_drop_replication_slot('{slot_name}'), then rerun with \"create_replication_slot\": true and the "
        "LOG_BASED streams' bookmarks removed from the state (each is copied anew under a new version, which "
        "replaces its rows at the target)"
    )


class PluginNotInstalledError(ReplicationError):
    """Raised when the server has no library file for the output plugin a slot was to be created with."""


def describe_plugin_failure(exc: psycopg2.Error, doing: str, plugin: str, slot_name: str = "") -> ReplicationError:
    """Turn a server error about the output plugin or privileges into one line naming the fix."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "output_plugin_libraries" in str(exc) or "may not be used as an output plugin" in text:
        return ReplicationError(
            f"{doing}: the server does not allow the {plugin} plugin: add it to output_plugin_libraries in "
            "postgresql.conf and reload (superuser or the service provider), or move the pipeline to pgoutput, "
            'which is always allowed (README: "Moving from wal2json to pgoutput")'
        )
    if "could not access file" in text and plugin in text:
        return PluginNotInstalledError(
            f"{doing}: the {plugin} plugin is not installed on the server: install it "
            "(Debian: postgresql-<version>-wal2json), or use pgoutput, which is built in"
        )
    if plugin == "pgoutput" and re.search(r'publication ".*" does not exist', text):
        return younger_publication_error(f"{doing}: {text}", slot_name)
    if "permission denied" in text or "must be superuser or replication role" in text:
        return ReplicationError(
            f"{doing}: {text}: grant the REPLICATION attribute with ALTER ROLE ... WITH REPLICATION"
        )
    return ReplicationError(f"{doing}: {text}")
