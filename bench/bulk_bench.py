"""Our guarded bulk request beside helpers.bulk of the same documents, one difference at a time.

The handler's bulk write alone was measured slower than the ceiling's whole run
(``helpers.bulk`` of the same final documents). Candidates: the conditional writes
(``create`` / ``if_seq_no``), tombstones instead of deletes, the request's size, the client's
serialisation and our transport path. Each variant below changes one of them; all write the
1,000 documents of bench/handler_bench.py's cold batch into a fresh index seeded with the same
400 earlier documents, interleaved, only the bulk request on the clock:

* ``helpers``: ``helpers.bulk`` of the final documents as dicts (the ceiling: plain ``index``);
* ``ours``: our exact request body (``create`` for new ids, ``index`` guarded by
  ``if_seq_no``/``if_primary_term`` for existing ones), sent through our store;
* ``ours_plain``: our body with plain ``index`` actions and no conditions, through our store;
* ``ours_deletes``: ``ours``, with the REMOVEs sent as guarded ``delete`` instead of tombstones;
* ``client_bulk``: our exact body through the client's own ``es.bulk(operations=bytes)``;
* ``ours_filtered``: ``ours`` asking for only what the guard reads of the answer
  (``filter_path``: status, error, ``_seq_no``, ``_primary_term``).

Each line gives the wall time and this process's CPU time (serialising the request, parsing
the response); the rest of the wall time is the cluster's.

Usage: ``python bench/bulk_bench.py --runs 9 [--es-url URL] [--json FILE]``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import handler_bench  # noqa: E402

INDEX = "bench-bulk"
FILTER = "errors,items.*.status,items.*.error,items.*._seq_no,items.*._primary_term"


def main() -> int:
    parser = common.parser(__doc__)
    common.add_es_flag(parser)
    parser.add_argument("--runs", type=common.positive, default=9, help="measured runs per variant (default: 9)")
    args = parser.parse_args()

    from elasticsearch import Elasticsearch, helpers

    from indexer.actions import Write, bulk_body, current_of
    from indexer.layout import index_body
    from indexer.records import change_of
    from indexer.search import ElasticsearchStore

    seed_records, records = handler_bench.batch()
    seed = handler_bench.sources(seed_records)
    changes = [change_of(record, position, INDEX) for position, record in enumerate(records)]

    with common.elasticsearch(args.es_url) as es_url:
        es = Elasticsearch(es_url, request_timeout=120)
        store = ElasticsearchStore(Elasticsearch(es_url, request_timeout=120, max_retries=0))

        def fresh() -> dict[str, Any]:
            """The index recreated and seeded; the revisions of the documents it holds."""
            es.indices.delete(index=INDEX, ignore_unavailable=True)
            es.indices.create(index=INDEX, **index_body())
            lines = []
            for doc_id, source in seed:
                lines += [json.dumps({"create": {"_index": INDEX, "_id": doc_id}}).encode(), source]
            es.bulk(operations=b"\n".join(lines) + b"\n", refresh=True)
            docs = es.mget(index=INDEX, ids=[c.doc_id for c in changes], source=False)["docs"]
            return {doc["_id"]: doc for doc in docs}

        def guarded(found: dict[str, Any]) -> list[Write]:
            writes = []
            for change in changes:
                doc = found[change.doc_id]
                current = current_of({**doc, "_source": {}}) if doc.get("found") else None
                writes.append(Write(INDEX, change, current))
            return writes

        cpu: dict[str, list[float]] = {}

        def timed(send: Any, name: str) -> float:
            started, started_cpu = time.perf_counter(), time.process_time()
            response = send()
            seconds = time.perf_counter() - started
            cpu.setdefault(name, []).append(time.process_time() - started_cpu)
            body = response.body if hasattr(response, "body") else response
            if isinstance(body, dict) and body.get("errors"):
                raise SystemExit(f"a variant's bulk failed: {str(body)[:300]}")
            if isinstance(body, tuple) and body[1]:
                raise SystemExit(f"helpers.bulk failed: {body[1]}")
            return seconds

        final = [{"_index": INDEX, "_id": c.doc_id, "_source": json.loads(c.source)} for c in changes]
        sizes: dict[str, int] = {}

        def helpers_side() -> float:
            fresh()
            return timed(lambda: helpers.bulk(es, final, chunk_size=len(final), max_chunk_bytes=100 * 1024 * 1024), "helpers")

        def ours() -> float:
            body = bulk_body(guarded(fresh()))
            sizes["ours"] = len(body)
            return timed(lambda: store.bulk(body, 120), "ours")

        def ours_plain() -> float:
            fresh()
            lines = []
            for change in changes:
                lines += [b'{"index":{"_index":"%s","_id":%s}}' % (INDEX.encode(), json.dumps(change.doc_id).encode()),
                          change.source]
            body = b"\n".join(lines) + b"\n"
            sizes["ours_plain"] = len(body)
            return timed(lambda: store.bulk(body, 120), "ours_plain")

        def ours_deletes() -> float:
            lines = []
            for write in guarded(fresh()):
                if write.change.delete and write.current is not None:
                    lines.append(json.dumps({"delete": {"_index": INDEX, "_id": write.change.doc_id,
                                                        "if_seq_no": write.current.seq_no,
                                                        "if_primary_term": write.current.primary_term}}).encode())
                else:
                    lines += bulk_body([write]).rstrip(b"\n").split(b"\n")
            body = b"\n".join(lines) + b"\n"
            sizes["ours_deletes"] = len(body)
            return timed(lambda: store.bulk(body, 120), "ours_deletes")

        def client_bulk() -> float:
            body = bulk_body(guarded(fresh()))
            return timed(lambda: es.bulk(operations=body), "client_bulk")

        def ours_filtered() -> float:
            body = bulk_body(guarded(fresh()))
            return timed(lambda: store.transport.request("POST", "/_bulk", "bulk", 120, body=body, ndjson=True,
                                                         params={"filter_path": FILTER}), "ours_filtered")

        sides = {"helpers": helpers_side, "ours": ours, "ours_plain": ours_plain,
                 "ours_deletes": ours_deletes, "client_bulk": client_bulk, "ours_filtered": ours_filtered}
        results = common.interleaved(sides, args.runs, warmup=1)
        from elasticsearch.serializer import JsonSerializer

        serializer = JsonSerializer()
        sizes["helpers"] = sum(len(serializer.dumps({"index": {"_index": INDEX, "_id": d["_id"]}})) +
                               len(serializer.dumps(d["_source"])) + 2 for d in final)
        es.indices.delete(index=INDEX, ignore_unavailable=True)

    medians = {name: round(common.median(values) * 1000, 1) for name, values in results.items()}
    cpu_medians = {name: round(common.median(values) * 1000, 1) for name, values in cpu.items()}
    figures = {"benchmark": "bulk", "runs": args.runs, "median_ms": medians, "client_cpu_ms": cpu_medians,
               "noise": {name: common.spread(values) for name, values in results.items()},
               "request_bytes": sizes,
               "vs_helpers": {name: round(medians[name] / medians["helpers"], 3) for name in medians}}
    print(f"\nmedians of {args.runs} interleaved runs (bulk request only), 1,000 documents:")
    for name, value in medians.items():
        print(f"  {name:<15} {value:7.1f} ms  {figures['noise'][name]:>5}  {figures['vs_helpers'][name]:.2f}x helpers"
              f"  client CPU {cpu_medians[name]:5.1f} ms  {sizes.get(name, sizes['ours']):,} bytes")
    common.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
