"""Packaging for tap-postgres, a Singer tap for PostgreSQL."""

from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as readme:
    long_description = readme.read()

setup(
    name="tap-postgres",
    version="0.1.0",
    description="Singer tap for PostgreSQL: discovery, FULL_TABLE, INCREMENTAL and LOG_BASED sync, "
    "compatible with pipelinewise-tap-postgres",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["tap_postgres", "tap_postgres.*"]),
    install_requires=[
        "singer-sdk>=0.40,<1",
        "psycopg2-binary>=2.9,<3",
        "orjson>=3.9",
        "boto3>=1.26",
    ],
    extras_require={
        "dev": [
            "pytest>=7",
            # make test runs the files on two workers (--dist loadfile: a file's module fixtures stay together)
            "pytest-xdist>=3",
            "ruff>=0.4",
            # moto's standalone server is the S3-compatible endpoint of the fast_sync_rds tests
            "moto[server]>=5",
            # the generative suite: random schemas and values, records validated under draft 4 and 2020-12
            "hypothesis>=6.100",
            "jsonschema>=4.18",
            # tests/test_meltano.py reads the Hub definition (meltano/tap-postgres.yml)
            "pyyaml>=6",
        ],
    },
    entry_points={"console_scripts": ["tap-postgres=tap_postgres.__main__:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Database",
    ],
)
