"""Allows `python -m tap_postgres`."""

from tap_postgres.cli import main

main()
