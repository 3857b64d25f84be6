#!/usr/bin/env python3
"""TF-IDF + logistic-regression baseline for out-of-scope detection on Banking77 with
held-out intents, measured with the same protocol as `cargo bench -p charter-decide --bench
oos`: for each seed, the 19 intents (a quarter of 77) whose SHA-256 of "{seed}:{intent}"
(hex) sorts first are unknown; train on the other intents' training texts, evaluate on the
whole test set (the unknown intents' texts are out of scope). The score is the maximum
softmax probability; a case is kept when it reaches the threshold.

Run: pip install scikit-learn && python3 scripts/oos_baseline.py [--seeds 1 2 3]
Data: crates/charter-decide/tests/data/banking77 (Banking77, PolyAI, CC BY 4.0).
"""
import argparse
import csv
import hashlib
import os
import time

import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

DATA = os.path.join(os.path.dirname(__file__), "..", "crates", "charter-decide", "tests", "data", "banking77")
THRESHOLDS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]


def load(name):
    with open(os.path.join(DATA, name), newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return [(r[0], r[1]) for r in rows[1:]]


def held_out(intents, seed):
    keyed = sorted((hashlib.sha256(f"{seed}:{i}".encode()).hexdigest(), i) for i in intents)
    return {i for _, i in keyed[: len(intents) // 4]}


def ece(conf, correct, bins=15):
    conf, correct = np.asarray(conf), np.asarray(correct, dtype=float)
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += abs(conf[m].mean() - correct[m].mean()) * m.mean()
    return total


def auroc(score, in_scope):
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    n_in = in_scope.sum()
    n_out = len(score) - n_in
    return (ranks[in_scope].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out)


def best_at_recall(score, in_scope, right, min_recall=0.85):
    best = (0.0, None)
    n_in, n_out = in_scope.sum(), (~in_scope).sum()
    for t in np.unique(score):
        kept = score >= t
        recall = 1 - (kept & ~in_scope).sum() / n_out
        kc = (kept & right).sum() / n_in
        if recall >= min_recall and kc > best[0]:
            best = (kc, t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    args = ap.parse_args()
    train, test = load("train.csv"), load("test.csv")
    intents = sorted({l for _, l in train})
    table = {t: [] for t in THRESHOLDS}
    summary = []
    for seed in args.seeds:
        unknown = held_out(intents, seed)
        tr = [(x, l) for x, l in train if l not in unknown]
        t0 = time.process_time()
        word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
        char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, lowercase=True)
        texts = [x for x, _ in tr]
        X = hstack([word.fit_transform(texts), char.fit_transform(texts)]).tocsr()
        clf = LogisticRegression(C=20.0, max_iter=300)
        clf.fit(X, [l for _, l in tr])
        cpu = time.process_time() - t0
        tx = [x for x, _ in test]
        P = clf.predict_proba(hstack([word.transform(tx), char.transform(tx)]).tocsr())
        conf = P.max(axis=1)
        pred = clf.classes_[P.argmax(axis=1)]
        labels = np.array([l for _, l in test])
        in_scope = np.array([l not in unknown for l in labels])
        right = in_scope & (pred == labels)
        for t in THRESHOLDS:
            kept = conf >= t
            table[t].append((
                (kept & right).sum() / in_scope.sum(),
                (kept & in_scope).sum() / in_scope.sum(),
                1 - (kept & ~in_scope).sum() / (~in_scope).sum(),
            ))
        kc, th = best_at_recall(conf, in_scope, right)
        summary.append({
            "seed": seed,
            "train_cpu_s": cpu,
            "in_scope_accuracy": right.sum() / in_scope.sum(),
            "auroc": auroc(conf, in_scope),
            "ece_in_scope": ece(conf[in_scope], right[in_scope]),
            "ece_all": ece(conf, right),
            "oos_mean_conf": conf[~in_scope].mean(),
            "oos_conf_ge_07": (conf[~in_scope] >= 0.7).mean(),
            "best_kc_at_recall_085": kc,
            "threshold": th,
        })
    print("TF-IDF (word 1-2 + char_wb 2-5, sublinear) + LogisticRegression(C=20), max softmax probability")
    for s in summary:
        print(f"seed {s['seed']}: train {s['train_cpu_s']:.1f} s CPU, in-scope accuracy {s['in_scope_accuracy']:.4f}, "
              f"AUROC {s['auroc']:.4f}, ECE in-scope {s['ece_in_scope']:.4f}, ECE all {s['ece_all']:.4f}, "
              f"OOS mean conf {s['oos_mean_conf']:.3f}, OOS conf>=0.7 {s['oos_conf_ge_07']:.3f}; "
              f"best kept-correct at OOS recall>=0.85: {s['best_kc_at_recall_085']:.4f} (threshold {s['threshold']})")
    print(f"mean over seeds {args.seeds}:")
    print("threshold  in-scope kept-correct  coverage  OOS recall")
    for t in THRESHOLDS:
        a = np.mean(table[t], axis=0)
        print(f"{t:9.2f}  {a[0]:21.4f}  {a[1]:8.4f}  {a[2]:10.4f}")
    m = lambda k: np.mean([s[k] for s in summary])
    print(f"mean AUROC {m('auroc'):.4f}; ECE in-scope {m('ece_in_scope'):.4f}, all {m('ece_all'):.4f}; "
          f"OOS mean conf {m('oos_mean_conf'):.3f}, OOS conf>=0.7 {m('oos_conf_ge_07'):.3f}; "
          f"best kept-correct at OOS recall>=0.85 {m('best_kc_at_recall_085'):.4f}")


if __name__ == "__main__":
    main()
