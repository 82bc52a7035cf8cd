"""Filter for `kubectl kustomize OVERLAY | validate_crds.py | kubernetes-validate --strict -`.

kubernetes-validate knows only the built-in kinds; for a custom resource it prints a warning and passes.
This validates the custom resources we ship against schemas written here
(schemas/<kind>.<group>-<version>.json, strict subsets of the operators' CRDs), refuses any other custom
kind, and writes the built-in resources to stdout for kubernetes-validate. Exit 1 (and nothing on stdout)
if a custom resource is invalid or unknown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parent / "schemas"
# kind -> (apiVersion, schema file). Any other kind outside the core API groups is refused.
CUSTOM_KINDS = {
    "ServiceMonitor": ("monitoring.coreos.com/v1", "servicemonitor.monitoring.coreos.com-v1.json"),
}
BUILT_IN_GROUPS = {
    "v1",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
}


def main() -> int:
    documents = [doc for doc in yaml.safe_load_all(sys.stdin) if doc]
    problems: list[str] = []
    built_in = []
    for doc in documents:
        kind, api_version = doc.get("kind"), doc.get("apiVersion", "")
        name = f"{kind}/{(doc.get('metadata') or {}).get('name')}"
        if kind in CUSTOM_KINDS:
            expected_version, schema_file = CUSTOM_KINDS[kind]
            if api_version != expected_version:
                problems.append(f"{name}: apiVersion {api_version}, expected {expected_version}")
                continue
            schema = json.loads((SCHEMAS / schema_file).read_text())
            for error in Draft202012Validator(schema).iter_errors(doc):
                path = ".".join(str(p) for p in error.absolute_path) or "(root)"
                problems.append(f"{name}: {path}: {error.message}")
        elif api_version.split("/")[0] in BUILT_IN_GROUPS:
            built_in.append(doc)
        else:
            problems.append(f"{name}: {api_version} is not built in and has no schema in {SCHEMAS.name}/")
    for problem in problems:
        print(f"ERROR {problem}", file=sys.stderr)
    if problems:
        return 1
    yaml.safe_dump_all(built_in, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
