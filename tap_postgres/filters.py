"""Discovery filters: include/exclude patterns for databases, schemas and tables, switches for tables and views.

The patterns are PostgreSQL regular expressions (the `~` operator), bound as parameters into the
catalog queries, so the server filters and no name is ever spliced into SQL. A schema pattern is
matched against the schema's name, a table pattern against the qualified name `schema.table`.
"""

from __future__ import annotations

import dataclasses

import psycopg2
import psycopg2.errors

from tap_postgres.config import Config
from tap_postgres.errors import ConfigError

# The WHERE conditions of a relation `c` in schema `n`; every pattern left unset matches everything.
RELATION_CONDITIONS = """
   AND (%(schema_include)s::text IS NULL OR {n}.nspname ~ %(schema_include)s::text)
   AND (%(schema_exclude)s::text IS NULL OR {n}.nspname !~ %(schema_exclude)s::text)
   AND (%(table_include)s::text IS NULL OR ({n}.nspname || '.' || {c}.relname) ~ %(table_include)s::text)
   AND (%(table_exclude)s::text IS NULL OR ({n}.nspname || '.' || {c}.relname) !~ %(table_exclude)s::text)
   AND (%(with_tables)s OR {c}.relkind NOT IN ('r', 'p', 'f'))
   AND (%(with_views)s OR {c}.relkind NOT IN ('v', 'm'))
"""

# The WHERE conditions of a schema `n`: the user's schemas (never pg_* or information_schema), as filtered.
SCHEMA_CONDITIONS = """
   {n}.nspname <> 'information_schema' AND {n}.nspname NOT LIKE 'pg\\_%%'
   AND (%(schemas)s::text[] IS NULL OR {n}.nspname = ANY(%(schemas)s::text[]))
   AND (%(schema_include)s::text IS NULL OR {n}.nspname ~ %(schema_include)s::text)
   AND (%(schema_exclude)s::text IS NULL OR {n}.nspname !~ %(schema_exclude)s::text)
"""

# The WHERE conditions of a database name `d`.
DATABASE_CONDITIONS = """
   (%(database_include)s::text IS NULL OR {d} ~ %(database_include)s::text)
   AND (%(database_exclude)s::text IS NULL OR {d} !~ %(database_exclude)s::text)
"""


def relation_conditions(n: str = "n", c: str = "c") -> str:
    """Return the filter conditions of relation alias `c` in schema alias `n`, each starting with AND."""
    return RELATION_CONDITIONS.format(n=n, c=c)


def schema_conditions(n: str = "n") -> str:
    """Return the filter conditions of schema alias `n` (filter_schemas and the schema patterns)."""
    return SCHEMA_CONDITIONS.format(n=n)


def database_conditions(d: str) -> str:
    """Return the filter conditions of a database name expression `d`."""
    return DATABASE_CONDITIONS.format(d=d)


@dataclasses.dataclass(frozen=True)
class Filters:
    """What discovery keeps: the settings' patterns and switches, as bound parameters of the catalog queries."""

    schemas: tuple[str, ...] = ()  # filter_schemas
    schema_include: str | None = None
    schema_exclude: str | None = None
    table_include: str | None = None
    table_exclude: str | None = None
    database_include: str | None = None
    database_exclude: str | None = None
    with_tables: bool = True
    with_views: bool = True

    @classmethod
    def of(cls, config: Config) -> Filters:
        """Return the filters a config sets (an empty pattern is no pattern)."""
        return cls(
            schemas=tuple(config.schemas),
            schema_include=config.schema_include_pattern or None,
            schema_exclude=config.schema_exclude_pattern or None,
            table_include=config.table_include_pattern or None,
            table_exclude=config.table_exclude_pattern or None,
            database_include=config.database_include_pattern or None,
            database_exclude=config.database_exclude_pattern or None,
            with_tables=config.include_tables,
            with_views=config.include_views,
        )

    def params(self) -> dict:
        """Return the query parameters the conditions above bind."""
        values = dataclasses.asdict(self)
        values["schemas"] = list(self.schemas) or None
        return values

    def patterns(self) -> dict[str, str]:
        """Return each pattern that is set, by the config key that set it."""
        keys = {
            "schema_include": "schema_include_pattern",
            "schema_exclude": "schema_exclude_pattern",
            "table_include": "table_include_pattern",
            "table_exclude": "table_exclude_pattern",
            "database_include": "database_include_pattern",
            "database_exclude": "database_exclude_pattern",
        }
        return {key: getattr(self, field) for field, key in keys.items() if getattr(self, field)}

    def check(self, conn) -> None:
        """Raise ConfigError naming the key of a pattern the server does not read as a regular expression."""
        for key, pattern in self.patterns().items():
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT '' ~ %s", (pattern,))
            except psycopg2.errors.InvalidRegularExpression as exc:
                conn.rollback()
                reason = exc.diag.message_primary or str(exc).strip()
                raise ConfigError(
                    f'config key "{key}" is not a PostgreSQL regular expression ({reason}): fix it '
                    "(see https://www.postgresql.org/docs/current/functions-matching.html#FUNCTIONS-POSIX-REGEXP)"
                ) from None
        conn.rollback()


# Filters that keep every relation: a sync describes the tables its catalog names, whatever discovery kept.
KEEP_ALL = Filters()
