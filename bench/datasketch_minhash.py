#!/usr/bin/env python3
"""Python baseline for `dsv3c data prepare`'s near-duplicate stage: datasketch MinHash LSH over
the same corpus with the same settings (128 permutations, Jaccard 0.8, 3-word shingles of the
lower-cased text, keep the first of each duplicate cluster). Prints JSON."""
import json, sys, time
from datasketch import MinHash, MinHashLSH

path, perms, threshold, k = sys.argv[1], 128, 0.8, 3
t0 = time.perf_counter()
docs = [json.loads(l) for l in open(path)]
nbytes = sum(len(d["text"].encode()) for d in docs)
lsh = MinHashLSH(threshold=threshold, num_perm=perms)
kept = 0
for i, d in enumerate(docs):
    words = d["text"].lower().split()
    m = MinHash(num_perm=perms)
    for j in range(max(1, len(words) - k + 1)):
        m.update(" ".join(words[j:j + k]).encode())
    if lsh.query(m):
        continue
    lsh.insert(str(i), m)
    kept += 1
dt = time.perf_counter() - t0
print(json.dumps({"documents": len(docs), "kept": kept, "seconds": dt, "docs_per_sec": len(docs) / dt, "mb_per_sec": nbytes / 1e6 / dt}))
