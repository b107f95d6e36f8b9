"""Parse metro's Datadog dashboard and monitors with Datadog's own API client models.

Usage: datadog_check.py DASHBOARD.json MONITORS.json

The client (PyPI `datadog-api-client`, pinned in .ci/run) deserializes with type checks
into the models generated from Datadog's OpenAPI specification: a missing required field
raises; an unknown widget type or enum value is kept as an "unparsed" part, which this
script reports by its path. Prints one line per document and exits 1 if any is wrong.
"""

import json
import sys

from datadog_api_client import ApiClient, Configuration
from datadog_api_client.model_utils import OpenApiModel, UnparsedObject
from datadog_api_client.v1.model.dashboard import Dashboard
from datadog_api_client.v1.model.monitor import Monitor


def unparsed(o, path="$"):
    """The paths of the parts the models could not parse."""
    if isinstance(o, UnparsedObject):
        return [path]
    out = []
    if isinstance(o, OpenApiModel):
        for k, v in getattr(o, "_data_store", {}).items():
            out += unparsed(v, f"{path}.{k}")
        for c in getattr(o, "_composed_instances", None) or []:
            out += unparsed(c, path)
        if getattr(o, "_unparsed", False) and not out:
            out.append(path)
    elif isinstance(o, list):
        for i, v in enumerate(o):
            out += unparsed(v, f"{path}[{i}]")
    return out


def main():
    dashboard, monitors = sys.argv[1], sys.argv[2]
    bad = 0
    with ApiClient(Configuration()) as client:
        docs = [("dashboard", open(dashboard).read(), Dashboard)]
        for i, m in enumerate(json.load(open(monitors))):
            docs.append((f"monitor {i} ({m.get('name')})", json.dumps(m), Monitor))
        for name, text, model in docs:
            try:
                parts = unparsed(client.deserialize(text, (model,), True))
            except Exception as e:  # the client raises TypeError, ApiTypeError, ApiValueError
                parts = [f"{type(e).__name__}: {e}"]
            print(f"{name}: {'ok' if not parts else 'not parsed: ' + ', '.join(parts)}")
            bad += bool(parts)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
