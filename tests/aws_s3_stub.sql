-- A stand-in for RDS's aws_s3 extension, for tests: the same function signatures and result
-- columns, in PL/Python, writing CSV to an S3-compatible server with boto3.
-- Settings (ALTER DATABASE ... SET): aws_s3_stub.endpoint_url, aws_s3_stub.part_bytes (default 6 GB).
CREATE EXTENSION IF NOT EXISTS plpython3u;
CREATE SCHEMA aws_commons;
CREATE TYPE aws_commons._s3_uri_1 AS (bucket text, file_path text, region text);
CREATE FUNCTION aws_commons.create_s3_uri(s3_bucket text, s3_path text, aws_region text)
RETURNS aws_commons._s3_uri_1 LANGUAGE sql IMMUTABLE
AS $$ SELECT ROW(s3_bucket, s3_path, aws_region)::aws_commons._s3_uri_1 $$;

CREATE SCHEMA aws_s3;
CREATE FUNCTION aws_s3.query_export_to_s3(
    query text, s3_info aws_commons._s3_uri_1, options text DEFAULT NULL,
    OUT rows_uploaded bigint, OUT files_uploaded bigint, OUT bytes_uploaded bigint)
LANGUAGE plpython3u AS $$
import boto3

def setting(name, default):
    value = plpy.execute(f"SELECT current_setting('aws_s3_stub.{name}', true) AS v")[0]["v"]
    return value or default

def csv_field(value):
    # PostgreSQL's CSV: NULL is empty, an empty string is "", quoting only where needed
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    text = str(value)
    if text == "" or any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text

if "format csv" not in (options or "").lower():
    plpy.error("this aws_s3 stand-in only writes options 'format csv'")
part_limit = int(setting("part_bytes", str(6 * 1024 ** 3)))
client = boto3.client(
    "s3", region_name=s3_info["region"], endpoint_url=setting("endpoint_url", None),
    aws_access_key_id="testing", aws_secret_access_key="testing",
)
parts, chunk, rows = [], [], 0

def upload():
    body = "".join(chunk).encode()
    key = s3_info["file_path"] if not parts else f"{s3_info['file_path']}_part{len(parts) + 1}"
    try:
        client.put_object(Bucket=s3_info["bucket"], Key=key, Body=body)
    except Exception as exc:
        plpy.error(f"could not upload to s3://{s3_info['bucket']}/{key}: {exc}")
    parts.append(len(body))
    chunk.clear()

size = 0
cursor = plpy.cursor(query)
while True:
    batch = cursor.fetch(1000)
    if not batch:
        break
    for row in batch:
        line = ",".join(csv_field(value) for value in row.values()) + "\n"
        chunk.append(line)
        size += len(line.encode())
        rows += 1
        if size >= part_limit:
            upload()
            size = 0
if chunk:
    upload()
return rows, len(parts), sum(parts)
$$;
