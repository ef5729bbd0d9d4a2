"""`make demo`: a throwaway cluster with a small shop schema, discovered and synced by the real CLI.

Prints what a user would do by hand, a count of records per stream and a few sample records.
`python demo/run_demo.py [PORT]` (`make demo PORT=...`) puts the cluster on that port, else on a free one.
"""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import pgcluster  # noqa: E402

WORK = ROOT / ".demo"
SAMPLE_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped');
CREATE TABLE customers (
    id serial PRIMARY KEY, name text NOT NULL, email varchar(120), tags text[], attributes hstore,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY, customer_id int REFERENCES customers, status order_status NOT NULL,
    total numeric(12, 2), placed_on date, details jsonb, updated_at timestamp NOT NULL
);
CREATE SCHEMA warehouse;
CREATE TABLE warehouse.stock (sku uuid PRIMARY KEY, quantity int, restock_every interval, photo bytea);
CREATE VIEW paid_orders AS SELECT id, total FROM orders WHERE status = 'paid';
INSERT INTO customers (name, email, tags, attributes, created_at)
SELECT 'Customer ' || g, 'c' || g || '@example.com', ARRAY['vip', 'tier' || g % 3], 'source=>web',
       timestamptz '2024-01-01 09:00:00+01' + g * interval '1 hour'
  FROM generate_series(1, 200) g;
INSERT INTO orders (customer_id, status, total, placed_on, details, updated_at)
SELECT 1 + g % 200, (ARRAY['new', 'paid', 'shipped'])[1 + g % 3]::order_status, round((g * 7.31)::numeric, 2),
       date '2024-02-01' + g % 90, jsonb_build_object('items', g % 5 + 1, 'gift', g % 7 = 0),
       timestamp '2024-02-01 00:00:00' + g * interval '13 minutes'
  FROM generate_series(1, 1000) g;
INSERT INTO warehouse.stock
SELECT md5(g::text)::uuid, g * 3, make_interval(days => g % 30), decode('89504e47', 'hex')
  FROM generate_series(1, 50) g;
"""


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("$", " ".join(command))
    return subprocess.run(command, check=True, **kwargs)


def main(argv: list[str]) -> None:
    if len(argv) > 1 or (argv and not argv[0].isdigit()):
        sys.exit(f"usage: {sys.argv[0]} [PORT]   (make demo PORT=5433)")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    port = pgcluster.start(WORK / "pgdata", int(argv[0]) if argv else None)
    print(f"(demo PostgreSQL on 127.0.0.1:{port})")
    try:
        subprocess.run(
            ["psql", "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres", "-c", SAMPLE_SCHEMA],
            check=True,
            env={"PGPASSWORD": pgcluster.PASSWORD, "PATH": "/usr/bin:/bin"},
        )
        config = {
            "host": "127.0.0.1",
            "port": port,
            "user": "postgres",
            "password": pgcluster.PASSWORD,
            "dbname": "postgres",
        }
        (WORK / "config.json").write_text(json.dumps(config, indent=2))
        tap = str(Path(sys.executable).parent / "tap-postgres")
        with open(WORK / "catalog.json", "wb") as catalog_file:
            run([tap, "--config", str(WORK / "config.json"), "--discover"], stdout=catalog_file)

        catalog = json.loads((WORK / "catalog.json").read_text())
        for stream in catalog["streams"]:
            table_md = stream["metadata"][0]["metadata"]
            table_md["selected"] = True
            if stream["tap_stream_id"] == "public-orders":
                table_md.update({"replication-method": "INCREMENTAL", "replication-key": "updated_at"})
            else:
                table_md["replication-method"] = "FULL_TABLE"
        (WORK / "catalog.json").write_text(json.dumps(catalog, indent=2))
        print("(selected every stream: public-orders INCREMENTAL on updated_at, the others FULL_TABLE)")

        with open(WORK / "output.jsonl", "wb") as output:
            run([tap, "--config", str(WORK / "config.json"), "--catalog", str(WORK / "catalog.json")], stdout=output)
        show(WORK / "output.jsonl")
    finally:
        pgcluster.stop(WORK / "pgdata")


def show(output_path: Path) -> None:
    messages = [json.loads(line) for line in output_path.read_text().splitlines()]
    counts = collections.Counter(m["stream"] for m in messages if m["type"] == "RECORD")
    print(f"\nWrote {len(messages)} Singer messages to {output_path.relative_to(ROOT)}")
    print("\nRecords per stream:")
    for stream, count in sorted(counts.items()):
        print(f"  {stream:24} {count:6}")
    print("\nA sample record of each stream:")
    seen = set()
    for message in messages:
        if message["type"] == "RECORD" and message["stream"] not in seen:
            seen.add(message["stream"])
            print(f"  {message['stream']}: {json.dumps(message['record'])}")
    print("\nFinal STATE (pass it with --state next time):")
    print("  " + json.dumps([m for m in messages if m["type"] == "STATE"][-1]["value"]))


if __name__ == "__main__":
    main(sys.argv[1:])
