"""tap-postgres: a Singer tap that extracts PostgreSQL schemas, rows and changes."""

__version__ = "0.1.0"
