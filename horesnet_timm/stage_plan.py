"""The stage plan: the arithmetic a Runge-Kutta block runs between its sub-networks, as data.

While sub-network t runs, a block must keep stage t's input and enough maps to form the later
stages' inputs and the output. All of those are linear in the k_j computed so far, so the fewest
maps that carry them is the rank of the later rows of (A, b) restricted to the columns seen so
far, which can be well below what the sparsity pattern suggests (Verner-8's counts are in
BENCHMARKS.md). `stage_plan` keeps exactly such a basis, worked out once per tableau in exact
arithmetic (the tableau's own exact numbers); the block runs it as data.
"""
import functools
from typing import Dict, List, NamedTuple, Tuple

__all__ = ['INPUT', 'UPDATE', 'HOLD', 'K', 'IN', 'PlanOp', 'stage_plan', 'plan_reads']

INPUT, UPDATE, HOLD = 0, 1, 2
K = -1  # the slot of the stage output just computed
IN = -2  # the slot of the next stage's input


class PlanOp(NamedTuple):
    """One op of the arithmetic that follows a sub-network (a NamedTuple, so that TorchScript reads it too).

    INPUT: the next stage's input x + h sum coefs * sources (after the last stage, the output) into slot IN;
    UPDATE: slot += sum coefs * sources; HOLD: keep the stage output K as slot.
    """
    kind: int
    slot: int
    sources: List[int]
    coefs: List[float]
    into: int  # the slot whose buffer receives the result (no backward pass), or -1 for a new buffer
    release: List[int]  # slots no later op reads, dropped after this one


def _nonzero(v) -> bool:
    return not v == 0


def _row_space(rows: List[list]) -> List[Tuple[int, list]]:
    """Fully reduced echelon basis [(pivot column, row)] of the span of `rows` (exact)."""
    basis: List[Tuple[int, list]] = []
    for row in rows:
        row = _residual(row, basis)
        pivot = next((i for i, v in enumerate(row) if _nonzero(v)), None)
        if pivot is not None:
            row = [v / row[pivot] for v in row]
            basis = [(p, [u - r[pivot] * w for u, w in zip(r, row)]) for p, r in basis] + [(pivot, row)]
    return basis


def _residual(v: list, basis: List[Tuple[int, list]]) -> list:
    """`v` less its component in the span of a fully reduced echelon basis: zero iff v is in that span."""
    for p, r in basis:
        if _nonzero(v[p]):
            v = [u - v[p] * w for u, w in zip(v, r)]
    return list(v)


def _coordinates(target: list, vectors: List[list]) -> list:
    """alpha with sum_i alpha_i vectors_i == target, for independent vectors whose span holds target."""
    rows = [[vec[r] for vec in vectors] + [target[r]] for r in range(len(target))]
    for col in range(len(vectors)):
        top = next(i for i in range(col, len(rows)) if _nonzero(rows[i][col]))
        rows[col], rows[top] = rows[top], rows[col]
        rows[col] = [v / rows[col][col] for v in rows[col]]
        rows = [row if i == col or not _nonzero(row[col]) else [u - row[col] * w for u, w in zip(row, rows[col])]
                for i, row in enumerate(rows)]
    assert not any(_nonzero(row[-1]) for row in rows[len(vectors):]), 'target outside the span'
    return [rows[i][-1] for i in range(len(vectors))]


@functools.lru_cache(maxsize=None)
def stage_plan(a: Tuple[tuple, ...], b: tuple) -> Tuple[Tuple[PlanOp, ...], ...]:
    """The ops that follow each sub-network of a block with exact tableau (a, b): one tuple per stage.

    After sub-network t - 1 the kept maps W and k_{t-1} span U; what stays needed is V, the span of
    the later rows a_n[:t] (n > t) and b[:t]. Some maps (the "spent" ones: raw stage outputs
    first) are picked so that with k they span U modulo V; every other map W_i then moves into V
    by adding a combination of k and the spent maps (in place when nothing needs a backward pass),
    k itself is held if V still lacks a direction, and the next stage's input x + h a_t k (the output
    x + h b k after the last stage) is written over a spent map where one is free. While sub-network
    t runs the block holds dim V + 1 maps, the least possible; between sub-networks at most two more.
    """
    s = len(b)
    zero = b[0] * 0
    one = zero + 1
    kept: List[list] = []  # [slot, coefficients over k_0..k_{t-1}, raw: holds a sub-network's output as is]
    free_slot = 0
    steps = []
    for t in range(1, s + 1):  # the step after sub-network t - 1
        for m in kept:
            m[1] = m[1] + [zero]
        e = [zero] * (t - 1) + [one]
        later = [list(a[n][:t]) for n in range(t + 1, s)] + [list(b[:t])] if t < s else []
        space = _row_space(later)
        e_rest = _residual(e, space)
        k_spent = any(_nonzero(v) for v in e_rest)
        pivots = [e_rest] if k_spent else []
        pivot_maps = [(K, e)] if k_spent else []
        spent = []
        for m in sorted(kept, key=lambda m: not m[2]):
            rest = _residual(m[1], space)
            if any(_nonzero(v) for v in _residual(rest, _row_space(pivots))):
                pivots.append(rest)
                pivot_maps.append((m[0], m[1]))
                spent.append(m)
        staying = [m for m in kept if m not in spent]
        # the next input x + h a_t k (after the last stage, the output x + h b k), from the maps as they
        # were, so that it reads only the k_j that stage reads; written over a spent map of this call's
        # own making that no update below reads, preferably one of its terms (read first)
        target = list(a[t][:t]) if t < s else list(b)
        alpha = _coordinates(target, [m[1] for m in kept] + [e])
        terms = [(slot, v) for slot, v in zip([m[0] for m in kept] + [K], alpha) if _nonzero(v)]
        updates = []
        for m in staying:  # W_i -= sum_j c_j P_j puts W_i in V
            c = _coordinates(_residual(m[1], space), pivots) if pivots else []
            if any(_nonzero(v) for v in c):
                updates.append(PlanOp(UPDATE, m[0], [pm[0] for pm, v in zip(pivot_maps, c) if _nonzero(v)],
                                      [-float(v) for v in c if _nonzero(v)], -1, []))
                for (_, vec), v in zip(pivot_maps, c):
                    m[1] = [u - v * w for u, w in zip(m[1], vec)]
                m[2] = False
        free = [m[0] for m in spent if not m[2] and not any(m[0] in op.sources for op in updates)]
        into = next((sl for sl, _ in terms if sl in free), free[0] if free else -1)
        terms.sort(key=lambda term: term[0] != into)
        ops = [PlanOp(INPUT, IN, [sl for sl, _ in terms], [float(v) for _, v in terms], into, [])] + updates
        if later and not k_spent and len(staying) < len(space):
            ops.append(PlanOp(HOLD, free_slot, [K], [1.0], -1, []))
            staying.append([free_slot, e, True])
            free_slot += 1
        # release each spent map, and k unless held, after its last reader
        held = any(op.kind == HOLD for op in ops)
        for slot in [m[0] for m in spent] + ([] if held else [K]):
            last = max((i for i, op in enumerate(ops) if slot in op.sources or op.into == slot), default=0)
            ops[last].release.append(slot)
        kept = staying
        steps.append(tuple(ops))
    return tuple(steps)


def plan_reads(plan: List[List[PlanOp]]) -> List[List[int]]:
    """For each stage, the k_j that the plan's arithmetic for its input reads (stage 0: none)."""
    reads: List[List[int]] = [[]]
    cone: Dict[int, set] = {}
    for t, step in enumerate(plan):
        cone[K] = {t}
        for op in step:
            if op.kind == HOLD:
                cone[op.slot] = set(cone[K])
            elif op.kind == UPDATE:
                cone[op.slot] = cone[op.slot].union(*(cone[sl] for sl in op.sources))
            elif t + 1 < len(plan):
                reads.append(sorted(set().union(*(cone[sl] for sl in op.sources))))
            for sl in op.release:
                cone.pop(sl, None)
    return reads
