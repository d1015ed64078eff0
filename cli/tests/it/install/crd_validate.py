#!/usr/bin/env python3
"""Validates custom resources against their CustomResourceDefinition's own schema, as
the API server would: `kubernetes-validate` checks built-in kinds only.

    crd_validate.py CRDS.yaml RESOURCES.yaml

Every document of RESOURCES.yaml must be an instance of one of the CRDs in CRDS.yaml
(its apiVersion and kind served by one of them) and valid against that version's
openAPIV3Schema, read as the API server reads a structural schema:

- unknown fields are errors (kubectl's default field validation is Strict) unless the
  schema says x-kubernetes-preserve-unknown-fields;
- x-kubernetes-int-or-string accepts an integer or a string;
- nullable accepts null.

CEL rules (x-kubernetes-validations) cannot be evaluated here: a CRD that has any is
refused, so that nothing passes unchecked. Prints each problem with its document and
path; exits 1 if there is any.
"""
import sys

import jsonschema
import yaml


def structural(schema):
    """The CRD schema as a JSON Schema that judges what the API server judges."""
    if not isinstance(schema, dict):
        return schema
    if "x-kubernetes-validations" in schema:
        raise SystemExit("a CRD has CEL rules (x-kubernetes-validations), which this check cannot evaluate")
    out = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {k: structural(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = structural(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [structural(v) for v in value]
        elif key.startswith("x-kubernetes-") or key == "nullable":
            continue
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out = {"anyOf": [{"type": "integer"}, {"type": "string"}], **{k: v for k, v in out.items() if k != "type"}}
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    crds = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "CustomResourceDefinition"]
    if not crds:
        raise SystemExit(f"{sys.argv[1]}: no CustomResourceDefinition")
    schemas = {}
    for crd in crds:
        spec = crd["spec"]
        for version in spec["versions"]:
            if not version.get("served"):
                continue
            key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
            root = structural(version["schema"]["openAPIV3Schema"])
            # apiVersion, kind and metadata are the API server's, not the schema's.
            root.setdefault("properties", {}).update(
                {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
            )
            schemas[key] = root
    problems = 0
    count = 0
    for n, doc in enumerate(yaml.safe_load_all(open(sys.argv[2]))):
        if doc is None:
            continue
        count += 1
        name = f"document {n} ({doc.get('kind')} {doc.get('metadata', {}).get('name')})"
        schema = schemas.get((doc.get("apiVersion"), doc.get("kind")))
        if schema is None:
            print(f"{name}: {doc.get('apiVersion')} {doc.get('kind')} is served by none of the CRDs")
            problems += 1
            continue
        for error in jsonschema.Draft7Validator(schema).iter_errors(doc):
            path = ".".join(str(p) for p in error.absolute_path) or "(root)"
            print(f"{name}: {path}: {error.message}")
            problems += 1
    if count == 0:
        print(f"{sys.argv[2]}: no documents")
        problems += 1
    if problems:
        sys.exit(1)
    print(f"{count} custom resource(s) valid")


if __name__ == "__main__":
    main()
