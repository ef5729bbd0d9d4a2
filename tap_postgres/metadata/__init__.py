"""Catalog streams for data catalogs: structure, lineage, grants, statistics and statement usage.

`streams` defines each stream (name, key, schema, query), `lineage` reads views' column lineage
from their rules, `usage` turns pg_stat_statements' counters into deltas, and `sync` reads them
from one or several databases. They are discovered with `metadata_streams` (or `metadata_only`).
"""
