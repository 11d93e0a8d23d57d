import time, numpy as np

rng = np.random.default_rng(1)
N = 12_000_000
B = 200_000
cur = np.sort(rng.integers(0, 2**63, N, dtype=np.uint64))
prev = np.sort(rng.integers(0, 2**63, N, dtype=np.uint64))


def present(gen, keys):
    i = np.searchsorted(gen, keys)
    i[i == len(gen)] = 0
    return gen[i] == keys


ts = []
for r in range(10):
    batch = rng.integers(0, 2**63, B, dtype=np.uint64)
    batch[:2000] = cur[rng.integers(0, N, 2000)]  # 1% repeats
    t = time.perf_counter()
    uniq, first = np.unique(batch, return_index=True)  # within-batch repeats
    seen = present(cur, uniq) | present(prev, uniq)
    new = uniq[~seen]
    pos = np.searchsorted(cur, new)
    cur = np.insert(cur, pos, new)
    ts.append(time.perf_counter() - t)
print(
    "per batch s: median %.3f min %.3f max %.3f; state %d"
    % (np.median(ts), min(ts), max(ts), len(cur))
)
