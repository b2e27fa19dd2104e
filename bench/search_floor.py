"""How many search requests a name-prefix crawl needs at the least, from the catalog itself.

Search matches a query as a prefix of *any* word of a name, so an artist with two words is listed
under two prefixes, and a query shows at most ``1000 + limit`` results. This script builds the
simulator's catalog (no server, no crawl), takes the tree the crawler's query tree converges to
(split a prefix while more than the reach match it; the unsplit ones are the *leaves*), and counts:

* listings: (artist, distinct name word) pairs, the artists of every word taken once;
* leaf pages: ``sum(ceil(total / limit))`` over the leaves, the pages of paging every leaf in full,
  which is what a crawl pays unless a leaf can be skipped;
* skippable leaves: leaves all of whose artists have another word outside the leaf (only those
  can be skipped at no request once the rest of the crawl has brought their artists);
* tree nodes: the first pages of split nodes (each also brings results, but they repeat);

and prints the floor these give, ``leaf pages - skippable leaf pages + split nodes``, in requests
per artist, beside the ``1 / limit`` that assumes every artist is listed once. The tree here knows
every word in advance (no child that matches nothing, no exact run), so a real crawl can only
spend more.

``--orderings`` also pages the same tree in two orders, on the simulator's own ranking of each
leaf, stopping a leaf as soon as every artist it lists is held (what the crawler's known index
does): *in tree order*, each leaf paged to its end before the next, and *best first*, an oracle
that always pages next the leaf with the most unheld artists per remaining page (it knows which
those are), leaving the leaves whose artists other words bring anyway for last. How far apart
the two are is what any ordering of the pages could still save.

``--cover`` bounds what ANY choice of pages of that tree could cost, with full details for every
artist (so an artist counts only when a search page lists it: an album's or a track's artists
are simplified, and a new app hydrates those one request each). A page is *mandatory* when it
lists an artist all of whose name words fall under its leaf (found on no other leaf's page);
every split node's first page is paid too. What the mandatory pages leave uncovered (artists
with another word elsewhere) is then covered greedily from the other pages, largest gain first:
a set cover, computed with what each page lists known in advance, which no crawler knows before
it asks. The mandatory pages are a lower bound, the greedy cover an upper bound of the optimum.

    .venv/bin/python bench/search_floor.py --artists 100000 --limit 10
    .venv/bin/python bench/search_floor.py --artists 100000 --limit 50
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import math
import sys
from collections import Counter, defaultdict

from spotify_ingest.discovery.search import LATIN_ALPHABET
from spotify_ingest.sim.catalog import Catalog
from spotify_ingest.text import name_words


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--artists", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=10, help="results per search call")
    ap.add_argument("--max-offset", type=int, default=1000)
    ap.add_argument("--orderings", action="store_true", help="page the tree in two orders too")
    ap.add_argument("--cover", action="store_true", help="bound any choice of the tree's pages")
    args = ap.parse_args(argv)
    reach = args.max_offset + args.limit

    catalog = Catalog(args.artists, args.seed)
    words = [name_words(catalog.artist_name(i)) for i in range(catalog.n_artists)]
    n = len(words)
    postings: dict[str, list[int]] = defaultdict(list)
    for i, ws in enumerate(words):
        for w in ws:
            postings[w].append(i)
    vocab = sorted(postings)

    def matches(prefix: str) -> set[int]:
        lo = bisect.bisect_left(vocab, prefix)
        hi = bisect.bisect_left(vocab, prefix + "\U0010ffff")
        out: set[int] = set()
        for w in vocab[lo:hi]:
            out.update(postings[w])
        return out

    def children(prefix: str) -> set[str]:
        lo = bisect.bisect_left(vocab, prefix)
        hi = bisect.bisect_left(vocab, prefix + "\U0010ffff")
        return {w[len(prefix)] for w in vocab[lo:hi] if len(w) > len(prefix)}

    leaves: list[tuple[str, int, bool]] = []  # prefix, total, skippable
    splits = 0
    split_nodes: list[str] = []
    exact_pages = 0
    stack = sorted({w[0] for w in vocab})
    while stack:
        prefix = stack.pop()
        found = matches(prefix)
        if len(found) <= reach:
            others = all(any(not w.startswith(prefix) for w in words[i]) for i in found)
            leaves.append((prefix, len(found), others))
            continue
        splits += 1
        split_nodes.append(prefix)
        exact = len(postings.get(prefix, ()))
        if exact and not all(len(words[i]) > 1 for i in postings[prefix]):
            exact_pages += min(exact, reach) // args.limit  # the run a split node's own word needs
        stack.extend(prefix + c for c in sorted(children(prefix)))

    listings = sum(len(ws) for ws in words)
    leaf_pages = sum(math.ceil(t / args.limit) for _, t, _ in leaves)
    skippable = [(p, t) for p, t, ok in leaves if ok]
    skip_pages = sum(math.ceil(t / args.limit) for _, t in skippable)
    floor = leaf_pages - skip_pages + splits
    result = {
        "artists": n,
        "limit": args.limit,
        "words_per_name": round(listings / n, 3),
        "one_word_names": round(sum(1 for ws in words if len(ws) == 1) / n, 3),
        "names_by_word_count": dict(sorted(Counter(len(ws) for ws in words).items())),
        "listings_per_artist": round(listings / n, 3),
        "leaves": len(leaves),
        "leaf_pages": leaf_pages,
        "skippable_leaves": len(skippable),
        "skippable_leaf_pages": skip_pages,
        "split_nodes": splits,
        "exact_run_pages_of_one_word_artists": exact_pages,
        "floor_requests": floor,
        "floor_requests_per_artist": round(floor / n, 4),
        "naive_floor_per_artist": round(1 / args.limit, 4),
        "latin_alphabet": len(LATIN_ALPHABET),
    }
    if args.orderings or args.cover:
        leaf_prefixes = [p for p, _, _ in leaves]
        ranked = {  # each query's artists in the simulator's own order, as far as search reaches
            p: catalog.search(p, ["artist"], 0, reach)["artist"][1]
            for p in leaf_prefixes + split_nodes
        }
        if args.orderings:
            result.update(_orderings(ranked, leaf_prefixes, split_nodes, args.limit, n))
        if args.cover:
            result.update(_cover(ranked, words, leaf_prefixes, split_nodes, args.limit, n))
    print(json.dumps(result))
    return 0


def _cover(
    ranked: dict[str, list[int]],
    words: list[tuple[str, ...]],
    leaves: list[str],
    splits: list[str],
    limit: int,
    n: int,
) -> dict[str, float | int]:
    """The mandatory pages of the tree and a greedy cover of the rest (module docstring)."""
    covered: set[int] = set()
    optional: list[set[int]] = []
    mandatory = 0
    for p in leaves:
        items = ranked[p]
        for offset in range(0, len(items), limit):
            page = items[offset : offset + limit]
            # every word under this leaf: no other leaf lists the artist
            if any(all(w.startswith(p) for w in words[a]) for a in page):
                mandatory += 1
                covered.update(page)
            else:
                optional.append(set(page))
    for p in splits:
        covered.update(ranked[p][:limit])
    need = set().union(*optional) - covered
    uncovered_after_mandatory = len(need)
    # Greedy set cover with lazy gains: a page's gain only falls as others are taken.
    heap = [(-len(page & need), k) for k, page in enumerate(optional) if page & need]
    heapq.heapify(heap)
    extra = 0
    while need and heap:
        _, k = heapq.heappop(heap)
        gain = len(optional[k] & need)
        if gain == 0:
            continue
        if heap and gain < -heap[0][0]:
            heapq.heappush(heap, (-gain, k))
            continue
        need -= optional[k]
        extra += 1
    bound = mandatory + len(splits)
    return {
        "mandatory_pages": mandatory,
        "optional_pages": len(optional),
        "artists_left_by_mandatory_pages": uncovered_after_mandatory,
        "greedy_cover_extra_pages": extra,
        "cover_lower_bound_per_artist": round(bound / n, 4),
        "greedy_cover_per_artist": round((bound + extra) / n, 4),
    }


def _orderings(
    ranked: dict[str, list[int]], leaves: list[str], splits: list[str], limit: int, n: int
) -> dict[str, float]:
    """Requests per artist of paging the leaves in tree order and best first (module docstring).
    Both pay every node's first page; the artists only an exact run lists are left out of both."""

    def tree_order() -> int:
        held: set[int] = set()
        requests = 0
        for p in splits:
            requests += 1
            held.update(ranked[p][:limit])
        for p in sorted(leaves):
            items = ranked[p]
            for offset in range(0, len(items), limit):
                if offset and held.issuperset(items):
                    break
                requests += 1
                held.update(items[offset : offset + limit])
        return requests

    def best_first() -> int:
        held: set[int] = set()
        requests = 0
        for p in splits + leaves:
            requests += 1
            held.update(ranked[p][:limit])
        at = dict.fromkeys(leaves, limit)

        def key(p: str) -> float:  # minus unheld artists per remaining page
            items = ranked[p]
            pages = math.ceil((len(items) - at[p]) / limit)
            return -sum(1 for a in items if a not in held) / pages if pages > 0 else 0.0

        heap = [(key(p), p) for p in leaves if len(ranked[p]) > limit]
        heapq.heapify(heap)
        while heap:
            _, p = heapq.heappop(heap)
            now = key(p)
            if now == 0.0:
                continue  # nothing unheld left in this leaf
            if heap and now > heap[0][0]:
                heapq.heappush(heap, (now, p))  # its yield fell since it was queued
                continue
            requests += 1
            held.update(ranked[p][at[p] : at[p] + limit])
            at[p] += limit
            heapq.heappush(heap, (key(p), p))
        return requests

    return {
        "tree_order_requests_per_artist": round(tree_order() / n, 4),
        "best_first_requests_per_artist": round(best_first() / n, 4),
    }


if __name__ == "__main__":
    sys.exit(main())
