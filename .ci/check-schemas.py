"""Every JSON Schema given (files, or the *.json of folders) against its own meta-schema (`$schema`,
draft 2020-12 when absent), with format checks on. Exit 1 naming each schema that fails.

    python .ci/check-schemas.py docs/schemas
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
from jsonschema import FormatChecker, validators
from jsonschema.exceptions import SchemaError


def main(paths: list[str]) -> int:
    files = sorted(f for p in map(Path, paths) for f in (p.glob("*.json") if p.is_dir() else [p]))
    if not files:
        print("no schemas given", file=sys.stderr)
        return 2
    failed = 0
    for file in files:
        schema = orjson.loads(file.read_bytes())
        cls = validators.validator_for(schema, default=validators.Draft202012Validator)
        try:
            cls.check_schema(schema, format_checker=FormatChecker())
        except SchemaError as exc:
            failed += 1
            print(f"{file}: not a valid {cls.__name__} schema: {exc.message} at /{'/'.join(map(str, exc.path))}")
    print(f"{len(files) - failed} of {len(files)} schemas valid against their meta-schema")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
