"""Where a semantic cache's nearest-neighbour search is fastest, at 1,000 and 100,000 entries.

    .venv/bin/python bench/cache_vectors.py [--rounds 7] [--lookups 20] [--dimensions 256]
    SECRET_KEY=… PYTHONPATH=. .venv/bin/python bench/cache_vectors.py --cache   # the built cache

This measured the choice the semantic cache had to make first (decision 0050); ``--cache``
measures the built one's lookup (``runs.semantic_cache``: a refresh from its Redis stream, then
numpy over the process's matrix) against numpy alone over the same matrix. N unit vectors of float32 (one namespace: a version, environment, locale and partition)
are written to Redis, then one query's nearest neighbour (the highest cosine, a dot product of
unit vectors) is found four ways:

- ``memory``: numpy over a matrix this process already holds (the baseline: no I/O);
- ``blob``: the namespace's vectors kept in Redis as one string (``GET``), read and searched with
  numpy in the web process;
- ``hash``: one Redis hash field per entry (``HGETALL``), read, joined and searched with numpy;
- ``python``: the ``blob`` read, searched in pure Python (what no numpy would cost).

Each round times ``--lookups`` lookups of each way; the figures are the medians of the rounds'
medians, with each way's ratio to ``memory`` measured in the same run. Needs Redis on 127.0.0.1
(``scripts/ensure-services``); writes only under its own key prefix in ``--redis`` (database 2
by default) and deletes it at the end. Never run by the tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import redis

PREFIX = "bench-cache-vectors:"


def unit_vectors(n: int, dimensions: int, rng: np.random.Generator) -> np.ndarray:
    matrix = rng.standard_normal((n, dimensions)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def timed(lookup, query: np.ndarray, lookups: int) -> tuple[float, int]:
    times, found = [], -1
    for _ in range(lookups):
        started = time.perf_counter()
        found = lookup(query)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), found


def measure(client: redis.Redis, n: int, dimensions: int, rounds: int, lookups: int) -> None:
    rng = np.random.default_rng(n)
    matrix = unit_vectors(n, dimensions, rng)
    blob_key, hash_key = f"{PREFIX}blob:{n}", f"{PREFIX}hash:{n}"
    client.set(blob_key, matrix.tobytes())
    pipe = client.pipeline(transaction=False)
    for start in range(0, n, 5000):
        pipe.hset(
            hash_key,
            mapping={str(i): matrix[i].tobytes() for i in range(start, min(n, start + 5000))},
        )
    pipe.execute()

    def memory(query: np.ndarray) -> int:
        return int(np.argmax(matrix @ query))

    def blob(query: np.ndarray) -> int:
        held = np.frombuffer(client.get(blob_key), dtype=np.float32).reshape(-1, dimensions)
        return int(np.argmax(held @ query))

    def hashed(query: np.ndarray) -> int:
        fields = client.hgetall(hash_key)
        ids = list(fields)
        held = np.frombuffer(b"".join(fields.values()), dtype=np.float32).reshape(-1, dimensions)
        return int(ids[int(np.argmax(held @ query))])

    def python(query: np.ndarray) -> int:
        raw = np.frombuffer(client.get(blob_key), dtype=np.float32).reshape(-1, dimensions)
        rows, q = raw.tolist(), query.tolist()
        scores = [sum(a * b for a, b in zip(row, q, strict=True)) for row in rows]
        return max(range(len(scores)), key=scores.__getitem__)

    ways = {"memory": memory, "blob": blob, "hash": hashed}
    if (
        n <= 1000
    ):  # pure Python at 100,000 entries takes seconds a lookup: its size is shown at 1,000
        ways["python"] = python
    results: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        target = int(rng.integers(n))
        query = matrix[target] + rng.standard_normal(dimensions).astype(np.float32) * 0.01
        query /= np.linalg.norm(query)
        for name, lookup in ways.items():
            median, found = timed(lookup, query, lookups if name != "python" else 3)
            if found != target:
                raise SystemExit(f"{name} found {found}, not {target}")
            results[name].append(median)
    base = statistics.median(results["memory"])
    megabytes = matrix.nbytes / 1e6
    print(f"\n{n:,} entries of {dimensions} float32 ({megabytes:.1f} MB), {rounds} rounds")
    for name, values in results.items():
        figure = statistics.median(values)
        print(
            f"  {name:<7} median {figure:9.3f} ms   x{figure / base:8.1f} of memory   "
            f"(rounds: {', '.join(f'{v:.3f}' for v in values)})",
            flush=True,
        )
    client.delete(blob_key, hash_key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--lookups", type=int, default=20, help="lookups of each way per round")
    parser.add_argument("--dimensions", type=int, default=256)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/2")
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis)
    for n in (1_000, 100_000):
        measure(client, n, args.dimensions, args.rounds, args.lookups)


def measure_cache(client: redis.Redis, n: int, dimensions: int, rounds: int, lookups: int) -> None:
    """The semantic cache's own lookup (``runs.semantic_cache``: refresh from the namespace's
    Redis stream, then the nearest row of the process's matrix), against numpy over the same
    matrix with no refresh (the baseline), in the same run. The first read of the stream (a
    process that never held the namespace) is timed apart."""
    from runs import semantic_cache

    rng = np.random.default_rng(n)
    matrix = unit_vectors(n, dimensions, rng)
    stream = f"{PREFIX}stream:{n}"
    pipe = client.pipeline(transaction=False)
    expires = repr(time.time() + 3600)
    for i in range(n):
        fields = {"v": semantic_cache._pack(matrix[i]), "k": f"answer-{i}", "e": expires}
        pipe.xadd(stream, fields)
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    held = semantic_cache._Namespace()
    started = time.perf_counter()
    semantic_cache._refresh(held, stream, client)
    first_ms = (time.perf_counter() - started) * 1000

    def cached(query: np.ndarray) -> int:
        semantic_cache._refresh(held, stream, client)  # nothing new: one XRANGE, empty
        key, _ = held.nearest(query)
        return int(key.removeprefix("answer-"))

    def memory(query: np.ndarray) -> int:
        return int(np.argmax(matrix @ query))

    results: dict[str, list[float]] = {"memory": [], "cache": []}
    for _ in range(rounds):
        target = int(rng.integers(n))
        query = matrix[target] + rng.standard_normal(dimensions).astype(np.float32) * 0.01
        query /= np.linalg.norm(query)
        for name, lookup in (("memory", memory), ("cache", cached)):
            median, found = timed(lookup, query, lookups)
            if found != target:
                raise SystemExit(f"{name} found {found}, not {target}")
            results[name].append(median)
    base = statistics.median(results["memory"])
    print(f"\nsemantic_cache lookup, {n:,} entries, {rounds} rounds; first read {first_ms:.1f} ms")
    for name, values in results.items():
        figure = statistics.median(values)
        print(
            f"  {name:<7} median {figure:9.3f} ms   x{figure / base:8.2f} of memory   "
            f"(rounds: {', '.join(f'{v:.3f}' for v in values)})",
            flush=True,
        )
    client.delete(stream)


def main_cache() -> None:
    """``--cache``: the semantic cache's lookup through its own code (needs Django's settings)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", action="store_true")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--lookups", type=int, default=20)
    parser.add_argument("--dimensions", type=int, default=256)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/2")
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis)
    for n in (1_000, 100_000):
        measure_cache(client, n, args.dimensions, args.rounds, args.lookups)


if __name__ == "__main__":
    main_cache() if "--cache" in sys.argv else main()
