"""The command line: --version, --about, --discover and a sync, with pipelinewise's short flags.

Only click and the settings are imported up front: psycopg2 and the sync modules are imported by the
paths that connect, so --version and --about answer at once.
"""

from __future__ import annotations

import contextlib
import decimal
import logging
import os
import signal
import sys
from collections.abc import Iterator

import click

from tap_postgres import __version__, about
from tap_postgres.config import Config, merge_config_files, parse_config, read_json_file
from tap_postgres.errors import CatalogError, InterruptedRunError, OutputClosedError, StateError

LOGGER = logging.getLogger("tap-postgres")

# singer-sdk's console log line, so Meltano's log parsing sees the same fields
LOG_FORMAT = "{asctime:23s} | {levelname:8s} | {name:30s} | {message}"


def print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """Print `tap-postgres <version>` and exit."""
    if value:
        click.echo(f"{about.NAME} {__version__}")
        ctx.exit()


@click.command(name=about.NAME, help="Execute the Singer tap.", context_settings={"help_option_names": ["--help"]})
@click.option(
    "--version",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=print_version,
    help="Display the package version.",
)
@click.option("--about", "show_about", is_flag=True, help="Display package metadata and settings.")
@click.option(
    "--format",
    "about_format",
    type=click.Choice(["json", "markdown"], case_sensitive=False),
    default=None,
    help="Specify output style for --about",
)
@click.option(
    "-c",
    "--config",
    multiple=True,
    type=click.STRING,
    default=(),
    help="Config file; repeat it to merge several, a later file winning.",
)
@click.option("-d", "--discover", is_flag=True, help="Write a catalog of every table to stdout.")
@click.option(
    "--catalog",
    "-p",
    "--properties",
    "catalog",
    type=click.STRING,
    help="Catalog of the streams to sync (--properties is the older name).",
)
@click.option("-s", "--state", type=click.STRING, help="State file of the previous run.")
@click.option(
    "--test",
    "test_mode",
    is_flag=False,
    flag_value="all",
    default="disabled",
    type=click.Choice(["all", "schema", "disabled"]),
    help="Use --test to sync a single record for each stream. Use --test=schema to test schema output "
    "without syncing records.",
)
def command(
    show_about: bool,
    about_format: str | None,
    config: tuple[str, ...],
    discover: bool,
    catalog: str | None,
    state: str | None,
    test_mode: str,
) -> None:
    """Run --about, --discover or a sync, as the command line asks."""
    # click would make a closed stdout a silent exit 1
    with _closed_stdout_as_error():
        if show_about:
            print(about.format_about(about_format and about_format.lower()))
            return
        setup_logging()
        settings = parse_config(merge_config_files(config))
        if discover:
            from tap_postgres.output import MessageWriter

            MessageWriter.to_stdout().write_catalog(_discover(settings))
            return
        if test_mode != "disabled":
            _test(settings, catalog, schema_only=test_mode == "schema")
            return
        if catalog is None:
            raise CatalogError(
                "no catalog given: run with --discover to write one, select streams, "
                "then pass it with --catalog (or --properties)"
            )
        _sync(settings, catalog, state)


def _test(settings: Config, catalog: str | None, schema_only: bool) -> None:
    """Write one record (or only the SCHEMA) of each selected stream, or of every stream without a catalog."""
    from tap_postgres.mapping import mapped_writer
    from tap_postgres.output import MessageWriter
    from tap_postgres.sync.test_mode import run_test

    raw_catalog = read_json_file(catalog, "catalog", CatalogError, parse_float=decimal.Decimal) if catalog else None
    with MessageWriter.to_stdout() as writer:
        run_test(settings, raw_catalog, mapped_writer(writer, settings), schema_only)


def _sync(settings: Config, catalog: str, state: str | None) -> None:
    """Sync the catalog's selected streams from the state file's bookmarks."""
    from tap_postgres import catalog as catalog_module
    from tap_postgres import state as state_module
    from tap_postgres.metadata.sync import is_metadata_stream, sync_metadata
    from tap_postgres.output import MessageWriter
    from tap_postgres.sync import sync_streams

    # numbers with a fraction stay Decimal: schema bounds pass through and bookmarks bind back exactly
    raw_catalog = read_json_file(catalog, "catalog", CatalogError, parse_float=decimal.Decimal)
    streams = catalog_module.parse_catalog(raw_catalog, settings)
    raw_state = read_json_file(state, "state", StateError, parse_float=decimal.Decimal) if state else {}
    bookmarks = state_module.parse_state(raw_state)
    metadata = [stream for stream in streams if is_metadata_stream(stream)]
    rows = [stream for stream in streams if not is_metadata_stream(stream)]
    if settings.metadata_only and rows:
        LOGGER.warning("metadata_only is set: the %d selected row streams are not synced", len(rows))
        rows = []
    with MessageWriter.to_stdout() as writer:
        if metadata:
            sync_metadata(settings, metadata, bookmarks, writer)
        if rows or not metadata:
            sync_streams(settings, rows, bookmarks, writer, state_path=state)


def _discover(settings: Config) -> dict:
    """Return the catalog; a lock wait is named as in a sync, and a signal stops it at once."""
    from tap_postgres import discovery, locks
    from tap_postgres.connection import connect
    from tap_postgres.inflight import IN_FLIGHT, Interrupted

    try:
        with locks.watching(settings), connect(settings) as conn:
            IN_FLIGHT.now_doing("discovery")
            return discovery.discover_catalog(conn, settings)
    except Interrupted as exc:
        raise InterruptedRunError(
            f"interrupted by {signal.Signals(exc.signum).name} during discovery: no catalog was written", exc.signum
        ) from None


@contextlib.contextmanager
def _closed_stdout_as_error() -> Iterator[None]:
    """Turn a closed stdout into OutputClosedError: click would make it a silent exit 1, and the user
    must learn that the last STATE was not written."""
    try:
        yield
    except BrokenPipeError:
        raise OutputClosedError() from None


def setup_logging() -> None:
    """Log to stderr as singer-sdk taps do (level from TAP_POSTGRES_LOGLEVEL or LOGLEVEL, default INFO),
    then apply LOGGING_CONF_FILE as singer-python does: a logging.config.fileConfig file."""
    root = logging.getLogger()
    level = os.environ.get("TAP_POSTGRES_LOGLEVEL") or os.environ.get("LOGLEVEL") or "INFO"
    root.setLevel(level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, style="{"))
    root.addHandler(handler)
    logging.captureWarnings(True)
    path = os.environ.get("LOGGING_CONF_FILE")
    if path:
        from logging import config as logging_config  # rarely asked for: not imported by every run

        logging_config.fileConfig(path, disable_existing_loggers=False)
