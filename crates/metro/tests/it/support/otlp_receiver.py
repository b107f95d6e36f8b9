#!/usr/bin/env python3
"""An OTLP/HTTP metrics receiver for metro's tests: decodes every POST /v1/metrics with the
official protobuf schema (PyPI opentelemetry-proto) and appends one JSON line per request to
OUT. Usage: otlp_receiver.py HOST:PORT OUT. Prints "ready" once listening."""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as svc


def attrs(kvs):
    out = {}
    for kv in kvs:
        out[kv.key] = kv.value.string_value
    return out


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        req = svc.ExportMetricsServiceRequest()
        if self.path != "/v1/metrics" or self.headers["Content-Type"] != "application/x-protobuf":
            self.send_response(400)
            self.end_headers()
            return
        req.ParseFromString(body)
        rec = {"resource": [], "metrics": []}
        for rm in req.resource_metrics:
            rec["resource"].append(attrs(rm.resource.attributes))
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    points = []
                    if kind == "exponential_histogram":
                        temporality = m.exponential_histogram.aggregation_temporality
                        for p in m.exponential_histogram.data_points:
                            points.append({
                                "attributes": attrs(p.attributes),
                                "count": p.count,
                                "sum": p.sum,
                                "scale": p.scale,
                                "zero_count": p.zero_count,
                                "offset": p.positive.offset,
                                "bucket_counts": list(p.positive.bucket_counts),
                                "min": p.min,
                                "max": p.max,
                                "start": p.start_time_unix_nano,
                                "time": p.time_unix_nano,
                            })
                    elif kind in ("sum", "gauge"):
                        data = getattr(m, kind)
                        temporality = getattr(data, "aggregation_temporality", 0)
                        for p in data.data_points:
                            points.append({
                                "attributes": attrs(p.attributes),
                                "value": p.as_int if p.WhichOneof("value") == "as_int" else p.as_double,
                            })
                    else:
                        temporality = 0
                    rec["metrics"].append({
                        "name": m.name,
                        "unit": m.unit,
                        "type": kind,
                        "temporality": temporality,
                        "points": points,
                    })
        with open(sys.argv[2], "a") as f:
            f.write(json.dumps(rec) + "\n")
        answer = svc.ExportMetricsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


host, port = sys.argv[1].rsplit(":", 1)
server = HTTPServer((host, int(port)), Handler)
print("ready", flush=True)
server.serve_forever()
