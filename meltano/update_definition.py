"""Bring meltano/tap-postgres.yml up to date with the tap's settings: `python meltano/update_definition.py`.

A setting keeps the label written for it; a new one gets its name in title case. tests/test_meltano.py
fails until this is run after a setting is added, changed or removed.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tap_postgres import about
from tap_postgres.config import SETTINGS

PATH = Path(__file__).with_name("tap-postgres.yml")


def updated(hub: dict) -> dict:
    """Return the definition with capabilities and settings as --about has them."""
    labels = {setting["name"]: setting["label"] for setting in hub["settings"]}
    settings = []
    for setting in SETTINGS:
        entry = {"name": setting.name, "kind": "options" if setting.allowed else setting.kind}
        entry["label"] = labels.get(setting.name, setting.name.replace("_", " ").title())
        entry["description"] = setting.description
        if setting.default is not None:
            entry["value"] = setting.default
        if setting.allowed:
            entry["options"] = [{"label": value, "value": value} for value in setting.allowed]
        if setting.secret:
            entry["sensitive"] = True
        settings.append(entry)
    return {**hub, "capabilities": list(about.CAPABILITIES), "settings": settings}


if __name__ == "__main__":
    header, _ = PATH.read_text().split("\n", 1)
    PATH.write_text(
        header + "\n" + yaml.safe_dump(updated(yaml.safe_load(PATH.read_text())), sort_keys=False, width=110)
    )
