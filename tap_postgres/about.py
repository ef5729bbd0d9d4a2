"""`--about`: the tap's name, version, capabilities and settings in singer-sdk's text, json and markdown forms.

Written here rather than through singer-sdk's formatter, whose import costs most of a second:
`--about` runs at every `meltano install` and `meltano config`. tests/test_about.py keeps the three
forms equal to what singer-sdk's own formatter prints for the same facts.
"""

from __future__ import annotations

import json

from tap_postgres import __version__
from tap_postgres.config import ENV_PREFIX, config_jsonschema

NAME = "tap-postgres"
DESCRIPTION = "Singer tap for PostgreSQL, compatible with pipelinewise-tap-postgres."
# setup.py's python_requires (>=3.10) up to the newest Python singer-sdk supports
SUPPORTED_PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")

# singer-sdk's capability names (singer_sdk.helpers.capabilities), plus Meltano's log-based
CAPABILITIES = (
    "catalog",
    "state",
    "discover",
    "test",
    "about",
    "activate-version",
    "batch",
    "stream-maps",
    "schema-flattening",
    "log-based",
)


def sdk_version() -> str:
    """Return the installed singer-sdk's version, as singer-sdk's --about reports it."""
    from importlib import metadata  # only --about needs it

    try:
        return metadata.version("singer-sdk")
    except metadata.PackageNotFoundError:
        return "[could not be detected]"


def about_info() -> dict:
    """Return what --about --format json prints."""
    return {
        "name": NAME,
        "description": DESCRIPTION,
        "version": __version__,
        "sdk_version": sdk_version(),
        "supported_python_versions": list(SUPPORTED_PYTHONS),
        "capabilities": list(CAPABILITIES),
        "settings": config_jsonschema(),
    }


def format_about(output_format: str | None) -> str:
    """Return --about in `output_format`: "json", "markdown", or text when None."""
    info = about_info()
    if output_format == "json":
        return json.dumps(info, indent=2, default=str)
    if output_format == "markdown":
        return _markdown(info)
    return _text(info)


def _text(info: dict) -> str:
    """The text form: one block per setting with its type and environment variable."""
    lines = [
        f"Name: {info['name']}",
        f"Description: {info['description']}",
        f"Version: {info['version']}",
        f"SDK Version: {info['sdk_version']}",
        "Supported Python Versions:",
        *(f"  - {version}" for version in info["supported_python_versions"]),
        "Capabilities:",
        *(f"  - {capability}" for capability in info["capabilities"]),
        "Settings:",
    ]
    for name, schema in info["settings"]["properties"].items():
        lines += [
            f"  - Name: {name}",
            f"    Type: {schema.get('type')}",
            f"    Environment Variable: {ENV_PREFIX}{name.upper().replace('-', '_')}",
        ]
    return "\n".join(lines) + "\n"


def _markdown(info: dict) -> str:
    """The markdown form: capabilities, Python versions and a table of the settings."""
    parts = [
        f"# `{info['name']}`\n\n{info['description']}\n\nBuilt with the [Meltano Singer SDK](https://sdk.meltano.com).\n\n",
        "## Capabilities\n\n" + "\n".join(f"- `{capability}`" for capability in info["capabilities"]) + "\n\n",
        "## Supported Python Versions\n\n"
        + "\n".join(f"- {version}" for version in info["supported_python_versions"])
        + "\n\n",
        "## Settings\n\n| Setting | Required | Default | Description |\n|:--------|:--------:|:-------:|:------------|\n",
        "\n".join(_setting_rows(info["settings"])),
        f"\n\nA full list of supported settings and capabilities is available by running: `{info['name']} --about`\n",
    ]
    return "".join(parts)


def _setting_rows(schema: dict, parent: str = "") -> list[str]:
    """One markdown table row per setting, and per sub-setting of an object setting."""
    rows = []
    required = schema.get("required", [])
    for name, sub_schema in schema.get("properties", {}).items():
        full_name = f"{parent}.{name}" if parent else name
        description = sub_schema.get("description", "").replace("\n", "<BR/>")
        rows.append(f"| {full_name} | {name in required} | {sub_schema.get('default', 'None')} | {description} |")
        if "properties" in sub_schema:
            rows += _setting_rows(sub_schema, full_name)
    return rows
