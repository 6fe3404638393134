"""A consumer of analyticssink's events that checks each against docs/event-schema.json.

  validate_events.py SCHEMA redis URL STREAM   reads the Redis stream (XRANGE, in pages) like a consumer
  validate_events.py SCHEMA api                 reads an /api/events page (JSON) from stdin

Prints {"count": n, "event_ids": [...], "types": {...}} and exits 0 when every event is valid;
prints the first invalid event and why, and exits 1, otherwise."""
import json
import sys

import jsonschema


def check(validator, events):
    ids, types = [], {}
    for event in events:
        errors = sorted(validator.iter_errors(event), key=lambda e: list(e.path))
        if errors:
            print(json.dumps({"invalid": event, "errors": [f"{list(e.path)}: {e.message}" for e in errors]}))
            sys.exit(1)
        ids.append(event["event_id"])
        types[event["type"]] = types.get(event["type"], 0) + 1
    print(json.dumps({"count": len(ids), "event_ids": ids, "types": types}))


def from_redis(url, stream):
    import redis

    r = redis.Redis.from_url(url, decode_responses=True)
    start = "-"
    while True:
        page = r.xrange(stream, min=start, max="+", count=100)
        for entry_id, fields in page:
            event = json.loads(fields["event"])
            if fields.get("type") != event["type"]:
                print(json.dumps({"invalid": event, "errors": [f"entry type field {fields.get('type')!r}"]}))
                sys.exit(1)
            yield event
        if len(page) < 100:
            return
        start = "(" + page[-1][0]


def main():
    schema = json.load(open(sys.argv[1]))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    if sys.argv[2] == "redis":
        check(validator, list(from_redis(sys.argv[3], sys.argv[4])))
    else:
        check(validator, json.load(sys.stdin)["events"])


main()
