"""Catalog streams (pg_metadata-*): discovery, records, lineage, several databases, usage deltas, masking, targets.

The module starts its own cluster with pg_stat_statements preloaded (the session's has no
shared_preload_libraries), from the same binaries, so TAP_PG_VERSION runs it on each version.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json

import jsonschema
import pytest
from conftest import Database, new_database, records_of, select_all, statements_cluster, states_of

SCHEMA = """
CREATE EXTENSION pg_stat_statements;
CREATE SCHEMA shop; CREATE SCHEMA reports;
COMMENT ON SCHEMA shop IS 'Where orders live';
CREATE TYPE shop.status AS ENUM ('new', 'paid');
CREATE DOMAIN shop.positive AS int NOT NULL CHECK (VALUE > 0);
CREATE TABLE shop.customers (id int GENERATED ALWAYS AS IDENTITY (START WITH 10) PRIMARY KEY, name text NOT NULL,
                             email text);
COMMENT ON TABLE shop.customers IS 'People who buy';
COMMENT ON COLUMN shop.customers.email IS 'Where to write';
CREATE TABLE shop.orders (id bigserial PRIMARY KEY,
                          customer_id int NOT NULL REFERENCES shop.customers (id) ON DELETE CASCADE,
                          amount shop.positive, status shop.status DEFAULT 'new', created date NOT NULL);
CREATE INDEX orders_paid_created ON shop.orders (created) WHERE status = 'paid';
CREATE VIEW reports.customer_orders AS
    SELECT c.name AS customer, o.amount, o.amount * 2 AS doubled
      FROM shop.customers c JOIN shop.orders o ON o.customer_id = c.id WHERE o.status = 'paid';
CREATE MATERIALIZED VIEW reports.big_customers AS
    SELECT customer, sum(amount) AS total FROM reports.customer_orders GROUP BY customer;
CREATE TABLE shop.events (id int, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE shop.events_2026 PARTITION OF shop.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE FUNCTION shop.order_total(customer int) RETURNS bigint LANGUAGE sql STABLE
    AS $$ SELECT sum(amount) FROM shop.orders WHERE customer_id = customer $$;
CREATE PROCEDURE shop.noop() LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE ROLE catalog_analyst NOLOGIN;
GRANT USAGE ON SCHEMA reports TO catalog_analyst;
GRANT SELECT ON reports.customer_orders TO catalog_analyst;
GRANT SELECT (name) ON shop.customers TO catalog_analyst;
GRANT catalog_analyst TO postgres;
ALTER TABLE shop.orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY paid_only ON shop.orders FOR SELECT TO catalog_analyst USING (status = 'paid');
INSERT INTO shop.customers (name) SELECT 'customer ' || i FROM generate_series(1, 20) i;
INSERT INTO shop.orders (customer_id, amount, status, created)
    SELECT 10 + i % 20, 1 + i % 7, CASE WHEN i % 3 = 0 THEN 'paid' ELSE 'new' END::shop.status, '2026-06-01'
      FROM generate_series(1, 500) i;
INSERT INTO shop.events SELECT i, '2026-03-01' FROM generate_series(1, 50) i;
REFRESH MATERIALIZED VIEW reports.big_customers;
ANALYZE;
"""

USAGE = "pg_metadata-statement_usage"


@pytest.fixture(scope="module")
def cluster():
    """A cluster of the session's binaries with pg_stat_statements in shared_preload_libraries."""
    with statements_cluster() as server:
        yield server


@pytest.fixture(scope="module")
def shop(cluster, tmp_path_factory):
    database = new_database(cluster, "catalog_shop", tmp_path_factory.mktemp("catalog_shop"))
    database.execute(SCHEMA)
    database.query("SELECT shop.order_total(11)")
    yield database
    database.conn.close()


@pytest.fixture(scope="module")
def second(cluster, tmp_path_factory):
    """A second database, without pg_stat_statements."""
    database = new_database(cluster, "catalog_other", tmp_path_factory.mktemp("catalog_other"))
    database.execute("CREATE TABLE things (id int PRIMARY KEY, label text)")
    yield database
    database.conn.close()


def metadata_config(db: Database, **settings) -> dict:
    return dict(db.config, metadata_only=True, **settings)


# the catalog streams' entries do not depend on the database or the settings: discovered once
_DISCOVERED: dict = {}


def catalog_of(db: Database, only: set[str] | None = None) -> dict:
    """Return the metadata_only catalog with every stream (or those in `only`) selected."""
    if "catalog" not in _DISCOVERED:
        _DISCOVERED["catalog"] = db.discover(metadata_config(db))
    return select_all(copy.deepcopy(_DISCOVERED["catalog"]), only=only)


def by_stream(messages: list[dict]) -> dict[str, list[dict]]:
    streams: dict[str, list[dict]] = {}
    for message in messages:
        if message["type"] == "RECORD":
            streams.setdefault(message["stream"], []).append(message["record"])
    return streams


@pytest.fixture(scope="module")
def first_run(shop):
    """One metadata_only run of every catalog stream of the shop database: (messages, stderr)."""
    catalog = catalog_of(shop)
    messages, stderr, code = shop.try_sync(catalog, config=metadata_config(shop))
    assert code == 0, "\n".join(stderr)
    return messages, stderr


def test_catalog_streams_are_discovered_only_when_asked(shop):
    plain = {entry["tap_stream_id"] for entry in shop.discover()["streams"]}
    assert "shop-orders" in plain and not any(name.startswith("pg_metadata-") for name in plain)
    both = {entry["tap_stream_id"] for entry in shop.discover(dict(shop.config, metadata_streams=True))["streams"]}
    assert plain < both and len(both - plain) == 16
    only = {entry["tap_stream_id"] for entry in catalog_of(shop)["streams"]}
    assert only == both - plain


def test_every_record_is_valid_against_its_schema_and_has_its_key(first_run):
    messages, _ = first_run
    schemas = {m["stream"]: m for m in messages if m["type"] == "SCHEMA"}
    assert len(schemas) == 16
    for message in messages:
        if message["type"] == "RECORD":
            schema = schemas[message["stream"]]
            jsonschema.validate(message["record"], schema["schema"])
            assert all(message["record"][key] is not None for key in schema["key_properties"])
            assert message["record"]["database"] == "catalog_shop"
    # one version per snapshot stream, activated before and after its records
    for stream in schemas:
        activations = [m for m in messages if m["type"] == "ACTIVATE_VERSION" and m["stream"] == stream]
        assert len(activations) == (0 if stream == USAGE else 2)


def test_structure_streams_describe_the_database(first_run):
    streams = by_stream(first_run[0])
    relations = {(r["schema_name"], r["name"]): r for r in streams["pg_metadata-relations"]}
    assert relations[("shop", "customers")]["comment"] == "People who buy"
    assert relations[("shop", "customers")]["row_estimate"] == 20
    assert relations[("shop", "orders")]["row_security"] is True
    assert relations[("reports", "customer_orders")]["kind"] == "view"
    assert "JOIN shop.orders o" in relations[("reports", "customer_orders")]["view_definition"]
    assert relations[("reports", "big_customers")]["kind"] == "materialized view"
    assert relations[("shop", "events")]["partition_strategy"] == "range"
    assert relations[("shop", "events")]["partition_key"] == "RANGE (at)"
    assert relations[("shop", "events")]["total_bytes"] > 0
    partition = relations[("shop", "events_2026")]
    assert (partition["parent_schema"], partition["parent_name"]) == ("shop", "events")
    assert partition["partition_bound"] == "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"

    columns = {(c["table_name"], c["name"]): c for c in streams["pg_metadata-columns"]}
    assert columns[("customers", "id")]["identity"] == "always"
    assert columns[("customers", "id")]["identity_start"] == 10
    assert columns[("customers", "email")]["comment"] == "Where to write"
    assert columns[("orders", "status")]["default"] == "'new'::shop.status"
    assert columns[("orders", "amount")]["data_type"] == "shop.positive"

    constraints = {c["name"]: c for c in streams["pg_metadata-constraints"]}
    foreign = constraints["orders_customer_id_fkey"]
    assert (foreign["kind"], foreign["columns"], foreign["referenced_table"]) == (
        "foreign key",
        ["customer_id"],
        "customers",
    )
    assert (foreign["referenced_columns"], foreign["on_delete"], foreign["on_update"]) == (
        ["id"],
        "CASCADE",
        "NO ACTION",
    )
    assert constraints["orders_pkey"]["kind"] == "primary key"

    indexes = {i["name"]: i for i in streams["pg_metadata-indexes"]}
    assert indexes["orders_paid_created"]["predicate"] == "(status = 'paid'::shop.status)"
    assert indexes["orders_paid_created"]["key_columns"] == ["created"]

    sequences = {s["name"]: s for s in streams["pg_metadata-sequences"]}
    assert sequences["orders_id_seq"]["owned_by"] == "shop.orders.id"
    assert sequences["orders_id_seq"]["last_value"] == 500

    types = {t["name"]: t for t in streams["pg_metadata-types"]}
    assert types["status"]["labels"] == ["new", "paid"]
    assert (types["positive"]["base_type"], types["positive"]["checks"]) == ("integer", ["CHECK ((VALUE > 0))"])
    assert "customers" not in types and "_status" not in types

    functions = {f["name"]: f for f in streams["pg_metadata-functions"]}
    total = functions["order_total"]
    assert (total["kind"], total["language"], total["return_type"]) == ("function", "sql", "bigint")
    assert "sum(amount)" in total["body"] and total["signature"] == "shop.order_total(customer integer)"
    assert functions["noop"]["kind"] == "procedure"

    schemas = {s["name"]: s for s in streams["pg_metadata-schemas"]}
    assert set(schemas) == {"public", "shop", "reports"}
    assert (schemas["shop"]["comment"], schemas["reports"]["view_count"]) == ("Where orders live", 2)
    assert streams["pg_metadata-databases"][0]["total_bytes"] > 0


def test_roles_grants_and_policies(first_run):
    streams = by_stream(first_run[0])
    roles = {r["name"]: r for r in streams["pg_metadata-roles"]}
    assert roles["catalog_analyst"]["can_login"] is False and roles["postgres"]["superuser"] is True
    assert not any("password" in name for name in streams["pg_metadata-roles"][0])
    memberships = {(m["role"], m["member"]) for m in streams["pg_metadata-role_memberships"]}
    assert ("catalog_analyst", "postgres") in memberships
    grants = {
        (g["object_type"], g["object"], g["schema_name"], g["object_name"], g["column_name"], g["privilege"])
        for g in streams["pg_metadata-grants"]
        if g["grantee"] == "catalog_analyst"
    }
    assert grants == {
        ("schema", "reports", "reports", "reports", None, "USAGE"),
        ("view", "reports.customer_orders", "reports", "customer_orders", None, "SELECT"),
        ("column", "shop.customers.name", "shop", "customers", "name", "SELECT"),
    }
    (policy,) = streams["pg_metadata-policies"]
    assert (policy["table_name"], policy["command"], policy["roles"]) == ("orders", "SELECT", ["catalog_analyst"])
    assert policy["using_expression"] == "(status = 'paid'::shop.status)"


def test_lineage_names_the_source_columns_of_each_view(shop, first_run):
    edges = {
        (e["view_name"], e["view_column"], e["source_schema"] + "." + e["source_table"], e["source_column"], e["kind"])
        for e in by_stream(first_run[0])["pg_metadata-lineage"]
    }
    assert edges == {
        ("customer_orders", "customer", "shop.customers", "name", "direct"),
        ("customer_orders", "amount", "shop.orders", "amount", "direct"),
        ("customer_orders", "doubled", "shop.orders", "amount", "expression"),
        ("customer_orders", None, "shop.customers", "id", "query"),
        ("customer_orders", None, "shop.orders", "customer_id", "query"),
        ("customer_orders", None, "shop.orders", "status", "query"),
        ("big_customers", "customer", "reports.customer_orders", "customer", "direct"),
        ("big_customers", "total", "reports.customer_orders", "amount", "expression"),
    }
    # every source column is one the view's definition reads, as the server prints it
    for view, _, source, column, _ in edges:
        (definition,) = shop.query("SELECT pg_get_viewdef(%s::regclass)", (f"reports.{view}",))[0]
        assert column in definition and source.split(".")[1] in definition


def test_column_statistics_after_analyze(first_run):
    stats = {(s["table_name"], s["column_name"]): s for s in by_stream(first_run[0])["pg_metadata-column_statistics"]}
    status = stats[("orders", "status")]
    assert sorted(status["most_common_values"]) == ["new", "paid"]
    assert sum(status["most_common_frequencies"]) == pytest.approx(1.0)
    assert stats[("customers", "email")]["null_fraction"] == 1.0
    assert len(stats[("customers", "name")]["histogram_bounds"]) > 2


def test_statement_usage_then_only_its_deltas_under_state(shop, second):
    config = metadata_config(shop, metadata_databases="catalog_shop,catalog_other")
    catalog = catalog_of(shop)
    messages, stderr, code = shop.try_sync(catalog, config=config)
    assert code == 0, "\n".join(stderr)
    databases = {r["database"] for r in records_of(messages, "pg_metadata-relations")}
    assert databases == {"catalog_shop", "catalog_other"}
    # one warning for the database without the extension, naming it and the grant
    warnings = [line for line in stderr if "pg_metadata-statement_usage" in line and "WARNING" in line]
    assert len(warnings) == 1 and "catalog_other" in warnings[0] and "pg_read_all_stats" in warnings[0]
    usage = records_of(messages, USAGE)
    calls = {r["query"]: r for r in usage if "order_total" in r["query"]}
    assert calls and all(r["counted_from_zero"] for r in usage)
    state = states_of(messages)[-1]
    first_versions = {m["stream"]: m["version"] for m in messages if m["type"] == "ACTIVATE_VERSION"}

    for _ in range(3):
        shop.query("SELECT shop.order_total(12)")
    again, stderr, code = shop.try_sync(catalog, config=config, state=state)
    assert code == 0, "\n".join(stderr)
    deltas = {r["query"]: r for r in records_of(again, USAGE)}
    (total,) = [r for query, r in deltas.items() if "order_total" in query]
    assert (total["calls"], total["counted_from_zero"]) == (3, False)
    assert total["observed_from"] is not None and total["observed_from"] < total["observed_to"]
    # statements that did not run in between are not emitted again
    assert all(r["calls"] > 0 for r in deltas.values())
    assert len(deltas) < len(usage)
    versions = {m["stream"]: m["version"] for m in again if m["type"] == "ACTIVATE_VERSION"}
    assert set(versions) == set(first_versions) and all(versions[s] > first_versions[s] for s in versions)
    assert records_of(again, "pg_metadata-relations") and records_of(again, "pg_metadata-databases")

    # after a reset the counters start over: counted from zero, never a negative delta
    shop.query("SELECT pg_stat_statements_reset()")
    shop.query("SELECT shop.order_total(13)")
    after_reset, _, code = shop.try_sync(catalog, config=config, state=states_of(again)[-1])
    assert code == 0
    totals = [r for r in records_of(after_reset, USAGE) if "order_total" in r["query"]]
    assert [(r["calls"], r["counted_from_zero"]) for r in totals] == [(1, True)]


def test_every_connectable_database_filtered_by_the_patterns(shop, second):
    config = metadata_config(shop, metadata_databases="*", database_exclude_pattern="^postgres$")
    catalog = catalog_of(shop, only={"pg_metadata-databases"})
    messages, stderr, code = shop.try_sync(catalog, config=config)
    assert code == 0, "\n".join(stderr)
    assert {r["database"] for r in records_of(messages)} == {"catalog_shop", "catalog_other"}
    config["database_include_pattern"] = "other"
    messages, _, _ = shop.try_sync(catalog, config=config)
    assert {r["database"] for r in records_of(messages)} == {"catalog_other"}


def test_filters_apply_to_the_catalog_streams(shop):
    config = metadata_config(shop, schema_include_pattern="^shop$", table_exclude_pattern=r"\.events")
    catalog = catalog_of(shop, only={"pg_metadata-relations", "pg_metadata-columns"})
    messages, _, code = shop.try_sync(catalog, config=config)
    assert code == 0
    assert {r["name"] for r in records_of(messages, "pg_metadata-relations")} == {"customers", "orders"}
    assert {r["table_name"] for r in records_of(messages, "pg_metadata-columns")} == {"customers", "orders"}


@pytest.mark.parametrize("mode", ["hash", "drop"])
def test_sql_text_is_hashed_with_the_key_or_dropped(shop, mode):
    key = "catalog-secret-key"
    config = metadata_config(shop, metadata_sql_text=mode, metadata_hash_key=key)
    only = {"pg_metadata-relations", "pg_metadata-functions", USAGE}
    catalog = catalog_of(shop, only=only)
    messages, stderr, code = shop.try_sync(catalog, config=config)
    assert code == 0 and key not in "\n".join(stderr)
    (view,) = [r for r in records_of(messages, "pg_metadata-relations") if r["name"] == "customer_orders"]
    (function,) = [r for r in records_of(messages, "pg_metadata-functions") if r["name"] == "order_total"]
    usage = records_of(messages, USAGE)
    if mode == "drop":
        assert view["view_definition"] is None and function["body"] is None
        assert usage and all(r["query"] is None for r in usage)
        return
    (definition,) = shop.query("SELECT pg_get_viewdef('reports.customer_orders'::regclass)")[0]
    assert view["view_definition"] == hmac.new(key.encode(), definition.encode(), hashlib.sha256).hexdigest()
    assert len(function["body"]) == 64 and "sum" not in function["body"]
    assert usage and all(len(r["query"]) == 64 for r in usage)


def test_a_user_without_pg_read_all_stats_is_warned_once(shop):
    with shop.login_role("catalog_reader", "reader-secret") as config:
        config = metadata_config(shop, user="catalog_reader", password="reader-secret")
        catalog = catalog_of(shop, only={USAGE, "pg_metadata-roles"})
        messages, stderr, code = shop.try_sync(catalog, config=config)
    assert code == 0, "\n".join(stderr)
    warnings = [line for line in stderr if "WARNING" in line]
    assert len(warnings) == 1 and "GRANT pg_read_all_stats TO" in warnings[0]
    assert records_of(messages, "pg_metadata-roles")


# the README's query over the loaded catalog: each view column with the type of the column it comes from
README_QUERY = """
SELECT l.view_schema || '.' || l.view_name || '.' || l.view_column AS view_column,
       l.source_schema || '.' || l.source_table || '.' || l.source_column AS source, c.data_type
  FROM catalog.lineage l
  JOIN catalog.columns c ON c.database = l.database AND c.schema_name = l.source_schema
                        AND c.table_name = l.source_table AND c.name = l.source_column
 WHERE l.kind = 'direct'
 ORDER BY 1
"""


def test_catalog_streams_load_through_real_targets(cluster, shop, tmp_path):
    """One run's output piped into both targets: each stream's table holds its records, the README query runs."""
    from targets.compare import loaded_diffs
    from targets.pipeline import TARGETS, load_into_targets, require_targets, target_config, target_database

    require_targets()
    args = ["--catalog", str(shop.write_json("catalog.json", catalog_of(shop)))]
    lines, _, _ = shop.run_tap(*args, config=metadata_config(shop))
    streams = {json.loads(line)["stream"] for line in lines if line.startswith('{"type":"RECORD"')}
    assert len(streams) == 16
    with target_database(cluster, "catalog_target") as conn:
        configs = {target: target_config(target, cluster, "catalog_target", target) for target in TARGETS}
        load_into_targets(tmp_path, ("\n".join(lines) + "\n").encode(), configs)
        for target in TARGETS:
            diffs = loaded_diffs(lines, conn, target, target)
            assert not diffs, "\n".join(f"{target} {stream}: {diff.report()}" for stream, diff in diffs.items())
            with conn.cursor() as cur:
                cur.execute(README_QUERY.replace("catalog.", f"{target}."))
                assert cur.fetchall() == [
                    ("reports.big_customers.customer", "reports.customer_orders.customer", "text"),
                    ("reports.customer_orders.amount", "shop.orders.amount", "shop.positive"),
                    ("reports.customer_orders.customer", "shop.customers.name", "text"),
                ], target


def test_a_stream_the_user_cannot_read_is_skipped_with_one_warning_naming_the_grant(shop):
    shop.execute("REVOKE SELECT ON pg_stat_statements FROM PUBLIC")
    try:
        with shop.login_role("catalog_denied", "denied-secret", "GRANT pg_read_all_stats TO {role}"):
            config = metadata_config(shop, user="catalog_denied", password="denied-secret")
            catalog = catalog_of(shop, only={USAGE, "pg_metadata-schemas"})
            messages, stderr, code = shop.try_sync(catalog, config=config)
    finally:
        shop.execute("GRANT SELECT ON pg_stat_statements TO PUBLIC")
    assert code == 0, "\n".join(stderr)
    warnings = [line for line in stderr if "WARNING" in line]
    assert len(warnings) == 1
    assert (
        "permission denied" in warnings[0]
        and 'GRANT SELECT ON "public".pg_stat_statements TO "catalog_denied"' in warnings[0]
    )
    assert records_of(messages, "pg_metadata-schemas") and not records_of(messages, USAGE)


@pytest.mark.parametrize(
    "databases",
    [
        [],
        {"catalog_shop": {"counters": 5}},
        {"catalog_shop": {"observed_at": "yesterday", "counters": {"10/1/true": [1, 2, "0.5", "0", 3, 4]}}},
        {"catalog_shop": {"counters": {"10/1/true": [1, 2, "fast", "0", 3, 4]}}},
    ],
    ids=["not an object", "counters not an object", "not a timestamp", "not a time"],
)
def test_a_malformed_usage_bookmark_is_one_line_naming_it(shop, databases):
    state = {"bookmarks": {USAGE: {"databases": databases}}}
    messages, stderr, code = shop.try_sync(catalog_of(shop, only={USAGE}), config=metadata_config(shop), state=state)
    assert code != 0 and "Traceback" not in "\n".join(stderr), "\n".join(stderr)
    assert stderr[-1].startswith(f"tap-postgres: error: {USAGE}: the state's ")
    assert "remove the stream's bookmark" in stderr[-1]
    assert not records_of(messages)


def test_a_listed_database_that_does_not_exist_is_one_line_after_the_state(shop):
    config = metadata_config(shop, metadata_databases="catalog_shop,catalog_missing")
    catalog = catalog_of(shop, only={"pg_metadata-schemas"})
    messages, stderr, code = shop.try_sync(catalog, config=config)
    assert code != 0 and "Traceback" not in "\n".join(stderr)
    assert stderr[-1].startswith("tap-postgres: error: ") and "catalog_missing" in stderr[-1]
    assert messages[-1]["type"] == "STATE"
