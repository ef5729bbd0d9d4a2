"""Discovery filters: include/exclude patterns and the table and view switches, against matching and non-matching names."""

from __future__ import annotations

import pytest

SCHEMA = """
CREATE SCHEMA sales; CREATE SCHEMA sales_archive; CREATE SCHEMA "Odd.Name";
CREATE TABLE public.orders (id int PRIMARY KEY);
CREATE TABLE public.tmp_orders (id int PRIMARY KEY);
CREATE VIEW public.order_ids AS SELECT id FROM public.orders;
CREATE MATERIALIZED VIEW public.order_count AS SELECT count(*) AS n FROM public.orders;
CREATE TABLE sales.invoices (id int PRIMARY KEY);
CREATE TABLE sales_archive.invoices (id int PRIMARY KEY);
CREATE TABLE "Odd.Name"."a'b" (id int PRIMARY KEY);
"""


@pytest.fixture(scope="module")
def filtered_db(db):
    db.execute(SCHEMA)
    return db


def discovered(db, **settings) -> set[str]:
    return {entry["tap_stream_id"] for entry in db.discover(dict(db.config, **settings))["streams"]}


ALL = {
    "public-orders",
    "public-tmp_orders",
    "public-order_ids",
    "public-order_count",
    "sales-invoices",
    "sales_archive-invoices",
    "Odd.Name-a'b",
}


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, ALL),
        ({"schema_include_pattern": "^sales"}, {"sales-invoices", "sales_archive-invoices"}),
        ({"schema_include_pattern": "^sales$"}, {"sales-invoices"}),
        ({"schema_exclude_pattern": "_archive$|^public$"}, {"sales-invoices", "Odd.Name-a'b"}),
        ({"table_include_pattern": r"^public\.(orders|order_ids)$"}, {"public-orders", "public-order_ids"}),
        (
            {"table_exclude_pattern": r"\.tmp_|^sales"},
            ALL - {"public-tmp_orders", "sales-invoices", "sales_archive-invoices"},
        ),
        # the qualified name: a dot inside a quoted schema name is matched as it is spelled
        ({"table_include_pattern": r"^Odd\.Name\.a'b$"}, {"Odd.Name-a'b"}),
        ({"table_include_pattern": "nothing matches this"}, set()),
        ({"include_views": False}, ALL - {"public-order_ids", "public-order_count"}),
        ({"include_tables": "false"}, {"public-order_ids", "public-order_count"}),
        ({"include_tables": False, "include_views": False}, set()),
        # filter_schemas keeps working, and the patterns narrow it further
        ({"filter_schemas": "public,sales"}, ALL - {"sales_archive-invoices", "Odd.Name-a'b"}),
        ({"filter_schemas": "public,sales", "table_exclude_pattern": "^public"}, {"sales-invoices"}),
    ],
)
def test_filters_keep_matching_names_and_leave_out_the_others(filtered_db, settings, expected):
    assert discovered(filtered_db, **settings) == expected


def test_a_pattern_is_bound_never_spliced_into_sql(filtered_db):
    # a quote and a semicolon are pattern text, matched literally by the server
    assert discovered(filtered_db, table_include_pattern="a'b$|'; DROP TABLE public.orders; --") == {"Odd.Name-a'b"}
    assert filtered_db.query("SELECT count(*) FROM public.orders") == [(0,)]


def test_an_invalid_pattern_is_one_line_naming_the_key(filtered_db):
    config = dict(filtered_db.config, schema_exclude_pattern="(unclosed")
    lines, stderr, code = filtered_db.run_tap("--discover", config=config, check=False)
    assert code != 0 and lines == []
    assert (
        stderr.strip()
        .splitlines()[-1]
        .startswith(
            'tap-postgres: error: config key "schema_exclude_pattern" is not a PostgreSQL regular expression '
            "(invalid regular expression: parentheses () not balanced)"
        )
    )
    assert "Traceback" not in stderr
