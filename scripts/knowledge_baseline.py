#!/usr/bin/env python3
"""Retrieval quality of Charter's knowledge index against a BM25 baseline, in one run.

Indexes the Python 3.11 standard library reference (Debian package python3.11-doc, PSF
licence; `apt-get install python3.11-doc`) with `charter eval --stage retrieval`, which
reports recall@5, MRR, the index build time and query latencies of Charter's SQLite FTS5
index, and exports the passages it indexed. The same passages are then ranked with
rank_bm25's BM25Okapi (`pip install rank_bm25`) for the same 60 questions
(scripts/knowledge_eval/questions.jsonl, written for this benchmark: each names the page
that answers it). Both are scored at document level: a page's rank is the rank of its
best passage.

    python3 scripts/knowledge_baseline.py [path/to/charter] [--postgres postgres://user@host]

With --postgres (a server URL; a fresh database `charter_kb_eval_<pid>` is created with
psql and dropped after), the same questions are also asked of Charter's PostgreSQL index.

Prints one table; `--json` prints the numbers as JSON.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time

from rank_bm25 import BM25Okapi

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.join(HERE, "knowledge_eval")
DOCS = "/usr/share/doc/python3.11/html/library"
K = 5


def tokens(text):
    return re.findall(r"\w+", text.lower())


def doc_ranks(passage_docs, scores):
    """Rank of each document by its best passage (1-based), best first."""
    best = {}
    for doc, s in zip(passage_docs, scores):
        if doc not in best or s > best[doc]:
            best[doc] = s
    order = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
    return {doc: i + 1 for i, (doc, _) in enumerate(order)}


def charter_eval(charter, extra, passages_file=None):
    args = [charter, "eval", "ask", "--stage", "retrieval", "--dir", PROJECT,
            "--cases", os.path.join(PROJECT, "questions.jsonl"), "--k", str(K), "--json"] + extra
    if passages_file:
        args += ["--export-passages", passages_file]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"charter eval failed:\n{out.stderr}")
    return json.loads(out.stdout)


def postgres_eval(charter, server):
    name = f"charter_kb_eval_{os.getpid()}"
    subprocess.run(["psql", server + "/postgres", "-qc", f"CREATE DATABASE {name}"], check=True)
    try:
        return charter_eval(charter, ["--postgres", f"{server}/{name}"])
    finally:
        subprocess.run(["psql", server + "/postgres", "-qc", f"DROP DATABASE {name}"], check=True)


def main():
    argv = sys.argv[1:]
    pg = argv[argv.index("--postgres") + 1] if "--postgres" in argv else None
    positional = [a for i, a in enumerate(argv) if not a.startswith("--") and (i == 0 or argv[i - 1] != "--postgres")]
    charter = positional[0] if positional else "charter"
    as_json = "--json" in argv
    if not os.path.isdir(DOCS):
        sys.exit(f"{DOCS} is missing: apt-get install python3.11-doc")
    link = os.path.join(PROJECT, "docs")
    if not os.path.islink(link):
        os.symlink(DOCS, link)
    cases = [json.loads(l) for l in open(os.path.join(PROJECT, "questions.jsonl")) if l.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        passages_file = os.path.join(tmp, "passages.jsonl")
        ours = charter_eval(charter, [], passages_file)
        passages = [json.loads(l) for l in open(passages_file)]
    ours_pg = postgres_eval(charter, pg) if pg else None
    docs = [p["doc_key"] for p in passages]
    started = time.perf_counter()
    bm25 = BM25Okapi([tokens(p["heading"] + " " + p["text"]) for p in passages])
    build_ms = (time.perf_counter() - started) * 1000
    hits, rr, lat = 0, 0.0, []
    for c in cases:
        t = time.perf_counter()
        scores = bm25.get_scores(tokens(c["question"]))
        lat.append((time.perf_counter() - t) * 1e6)
        rank = doc_ranks(docs, scores).get(c["document"])
        if rank is not None and rank <= K:
            hits += 1
        if rank is not None:
            rr += 1.0 / rank
    lat.sort()
    base = {
        "recall_at_k": hits / len(cases),
        "mrr": rr / len(cases),
        "index_build_ms": build_ms,
        "query_p50_us": lat[len(lat) // 2],
        "query_p99_us": lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))],
    }
    result = {"cases": len(cases), "documents": ours["documents"], "passages": ours["passages"],
              "k": K, "charter": {k: ours[k] for k in ("recall_at_k", "mrr", "index_build_ms",
                                                       "query_p50_us", "query_p99_us")},
              "rank_bm25": base}
    cols = ("recall_at_k", "mrr", "index_build_ms", "query_p50_us", "query_p99_us")
    if ours_pg:
        result["charter_postgres"] = {k: ours_pg[k] for k in cols}
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print(f"{len(cases)} questions, {ours['documents']} pages, {ours['passages']} passages")
    print(f"{'':31}{'recall@' + str(K):>10}{'MRR':>8}{'build ms':>10}{'p50 us':>9}{'p99 us':>9}")
    rows = [("charter (SQLite FTS5)", result["charter"])]
    if ours_pg:
        rows.append(("charter (PostgreSQL tsvector)", result["charter_postgres"]))
    rows.append(("rank_bm25 BM25Okapi", base))
    for name, r in rows:
        print(f"{name:31}{r['recall_at_k']:>10.3f}{r['mrr']:>8.3f}{r['index_build_ms']:>10.0f}"
              f"{r['query_p50_us']:>9.0f}{r['query_p99_us']:>9.0f}")


if __name__ == "__main__":
    main()
