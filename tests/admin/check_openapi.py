#!/usr/bin/env python3
"""Checks the admin API against its OpenAPI document (src/admin/openapi.json).

Runs `admin_api_test "[openapi]"`, which calls every operation of the document and writes each
exchange to a transcript, then validates every response: its status is documented for the
operation (or in the document's shared responses), its Content-Type is the documented one, and
its body is valid under the documented JSON Schema (draft 2020-12, OpenAPI 3.1's dialect).

  check_openapi.py <admin_api_test binary> <openapi.json>
"""
import json
import os
import subprocess
import sys
import tempfile

try:
    import jsonschema
except ImportError:
    if os.environ.get("CI", "false") not in ("", "false"):
        raise
    print("check_openapi: python3-jsonschema is not installed (scripts/setup.sh); skipped")
    sys.exit(77)


def resolve(doc, node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = doc
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def main():
    binary, document = sys.argv[1], sys.argv[2]
    with open(document) as f:
        doc = json.load(f)
    jsonschema.Draft202012Validator.check_schema(doc["components"]["schemas"]["Key"])
    with tempfile.TemporaryDirectory() as tmp:
        transcript = os.path.join(tmp, "transcript.jsonl")
        env = dict(os.environ, KEYGATE_ADMIN_TRANSCRIPT=transcript)
        run = subprocess.run([binary, "[openapi]"], env=env)
        if run.returncode != 0:
            print("check_openapi: admin_api_test [openapi] failed")
            return 1
        with open(transcript) as f:
            exchanges = [json.loads(line) for line in f]
    failures = 0
    statuses = set()
    for ex in exchanges:
        what = f"{ex['method'].upper()} {ex['path']} -> {ex['status']}"
        operation = doc["paths"][ex["path"]][ex["method"]]
        response = operation["responses"].get(str(ex["status"]))
        if response is None:
            print(f"FAIL {what}: status not documented")
            failures += 1
            continue
        response = resolve(doc, response)
        content = response.get("content")
        if content is None:
            if ex["body"]:
                print(f"FAIL {what}: a body where the document has none")
                failures += 1
            continue
        ctype = ex["content_type"]
        if ctype not in content:
            print(f"FAIL {what}: Content-Type {ctype!r}, documented {list(content)}")
            failures += 1
            continue
        schema = dict(content[ctype]["schema"])
        # Resolve $refs against the whole document.
        schema["components"] = doc["components"]
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        validator = jsonschema.Draft202012Validator(
            schema, resolver=jsonschema.RefResolver.from_schema(schema))
        errors = list(validator.iter_errors(json.loads(ex["body"])))
        for e in errors:
            print(f"FAIL {what}: {e.message} at {list(e.absolute_path)}")
        failures += len(errors)
        statuses.add(ex["status"])
    print(f"check_openapi: {len(exchanges)} responses checked "
          f"(statuses {sorted(statuses)}), {failures} failures")
    return 1 if failures or not exchanges else 0


if __name__ == "__main__":
    sys.exit(main())
