"""Parses Prometheus text exposition from stdin with prometheus_client's parser
and prints the families as JSON: {name: {"type": t, "samples": [[name, labels, value]]}}."""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families

out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    out[family.name] = {
        "type": family.type,
        "samples": [[s.name, s.labels, None if math.isinf(s.value) or math.isnan(s.value) else s.value] for s in family.samples],
    }
json.dump(out, sys.stdout)
