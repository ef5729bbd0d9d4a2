"""The singer-sdk frame of the tap: settings declaration, --about, and the pipelinewise CLI options."""

from __future__ import annotations

import contextlib
import decimal
import logging
import logging.config
import os
import signal
from collections.abc import Iterator

import click
from singer_sdk import Tap
from singer_sdk.helpers.capabilities import PluginCapabilities, TapCapabilities

from tap_postgres import catalog as catalog_module
from tap_postgres import discovery, locks
from tap_postgres import state as state_module
from tap_postgres.config import Config, config_jsonschema, merge_config_files, parse_config, read_json_file
from tap_postgres.connection import connect
from tap_postgres.errors import CatalogError, InterruptedRunError, OutputClosedError, StateError
from tap_postgres.inflight import IN_FLIGHT, Interrupted
from tap_postgres.metadata.sync import is_metadata_stream, sync_metadata
from tap_postgres.output import MessageWriter
from tap_postgres.sync import sync_streams

LOGGER = logging.getLogger("tap-postgres")


class TapPostgres(Tap):
    """Singer tap for PostgreSQL, compatible with pipelinewise-tap-postgres."""

    name = "tap-postgres"
    package_name = "tap-postgres"
    dynamic_catalog = True
    config_jsonschema = config_jsonschema()
    # Stream maps, flattening and BATCH are singer-sdk features of its own record path; this tap
    # writes records from the server's bytes, so it does not claim them.
    capabilities = [
        TapCapabilities.CATALOG,
        TapCapabilities.STATE,
        TapCapabilities.DISCOVER,
        PluginCapabilities.ABOUT,
        PluginCapabilities.ACTIVATE_VERSION,
    ]

    @classmethod
    def print_version(cls, print_fn=print) -> None:  # type: ignore[override]
        """Print `tap-postgres <version>`: the tap's own version, not singer-sdk's banner."""
        print_fn(f"{cls.name} {cls.plugin_version}")

    @classmethod
    def append_builtin_config(cls, config_jsonschema: dict) -> None:
        """Add nothing: the SDK's stream-map settings do not apply to this tap."""

    @classmethod
    def invoke(  # type: ignore[override]
        cls,
        *,
        about: bool = False,
        about_format: str | None = None,
        config: tuple[str, ...] = (),
        discover: bool = False,
        catalog: str | None = None,
        state: str | None = None,
    ) -> None:
        """Run --about, --discover or a sync, as the command line asks."""
        # click would make a closed stdout a silent exit 1
        with _closed_stdout_as_error():
            super(Tap, cls).invoke(about=about, about_format=about_format)
            apply_logging_conf_file()
            settings = parse_config(merge_config_files(config))
            if discover:
                MessageWriter.to_stdout().write_catalog(_discover(settings))
                return
            if catalog is None:
                raise CatalogError(
                    "no catalog given: run with --discover to write one, select streams, "
                    "then pass it with --catalog (or --properties)"
                )
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

    @classmethod
    def get_singer_command(cls) -> click.Command:
        """Return the CLI: singer-sdk's options plus pipelinewise's short flags and --properties."""
        command = super().get_singer_command()
        kept = [param for param in command.params if param.name in ("version", "about", "about_format")]
        command.params = kept + [
            click.Option(
                ["-c", "--config"],
                multiple=True,
                type=click.STRING,
                default=(),
                help="Config file; repeat it to merge several, a later file winning.",
            ),
            click.Option(["-d", "--discover"], is_flag=True, help="Write a catalog of every table to stdout."),
            click.Option(
                ["--catalog", "-p", "--properties", "catalog"],
                type=click.STRING,
                help="Catalog of the streams to sync (--properties is the older name).",
            ),
            click.Option(["-s", "--state"], type=click.STRING, help="State file of the previous run."),
        ]
        return command


def _discover(settings: Config) -> dict:
    """Return the catalog; a lock wait is named as in a sync, and a signal stops it at once."""
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


def apply_logging_conf_file() -> None:
    """Honour LOGGING_CONF_FILE like singer-python does: a logging.config.fileConfig file."""
    path = os.environ.get("LOGGING_CONF_FILE")
    if path:
        logging.config.fileConfig(path, disable_existing_loggers=False)
