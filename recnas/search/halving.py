"""Successive halving over the finalists: short from-scratch training ranks them better than
the supernet does.

Why: on the `cpu` budget's data (200k rows, 30 random subnets, docs/benchmarks.md) the
supernet's fine-tuned scores rank architectures at Kendall tau 0.31 against their fully
trained validation log loss, one epoch of from-scratch training at 0.64 and two at 1.00.
So the finalists all train one evaluation interval (an epoch by default), the better half
trains one more, and so on until one is left, which trains to the end. Each finalist's
schedule is the full training config's from the start, so the survivor ends exactly as a
plain retrain would, and every step is resumable from the finalist's checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from recnas.search.ranking import nan_last


def successive_halving(keys: Sequence[str], advance: Callable[[str, int], float]) -> tuple[str | None, list[dict]]:
    """Run rungs 1, 2, ... until one key is left; `advance(key, rung)` trains `key` up to the end
    of `rung` evaluation intervals (or its end: early-stopped or done) and returns its best
    validation log loss within them, or `math.inf` where it cannot go on (its training diverged).

    Returns the survivor and one record per dropped key (its rung and score), in drop order.
    Ties keep the earlier key (the better search score, as `keys` come ranked). A key scored
    `inf` is dropped at that rung whatever the halving keeps, so it never survives; where every
    key left diverges in a rung, those dropped at the latest earlier rung with a score come back
    and go on from there. The survivor is None only where no key is left that did not diverge.
    """
    if not keys:
        raise ValueError("successive halving needs at least one candidate")
    if len(set(keys)) != len(keys):
        raise ValueError(f"successive halving: duplicate candidates in {list(keys)}")
    rank = {k: i for i, k in enumerate(keys)}
    alive, dropped, rung = list(keys), [], 0
    while len(alive) > 1:
        rung += 1
        scores = {k: advance(k, rung) for k in alive}
        # a score that is not a number (NaN logits: NaN, or None as model.pt stores it) ranks
        # last: NaN compares false both ways, so sorting on it left a diverged finalist anywhere,
        # e.g. ahead of the best one, which was dropped
        # ties keep search order at every rung (`alive` is in the previous rung's order, which
        # used to break a later rung's ties instead of the search rank the docstring promises)
        alive.sort(key=lambda k: (*nan_last(scores[k]), rank[k]))
        # a key that diverged is dropped now: kept as one of the better half, it went on to the
        # next rung (trained again, diverging again) and could end as the survivor
        keep = [k for k in alive if scores[k] != math.inf][: (len(alive) + 1) // 2]
        dropped += [{"key": k, "rung": rung, "val_logloss": scores[k]} for k in alive if k not in keep]
        alive = keep
        if not alive:  # every key left diverged: the best of those dropped before are still candidates
            earlier = [d for d in dropped if d["rung"] < rung and d["val_logloss"] != math.inf]
            if earlier:
                last = max(d["rung"] for d in earlier)
                alive = [d["key"] for d in earlier if d["rung"] == last]
                dropped = [d for d in dropped if d["key"] not in alive]
    return (alive[0] if alive else None), dropped
