"""A seeded synthetic market: ticks with the dependence real trades have, no network needed.

A fresh install trains and serves on this before any exchange is configured, and
tests need data whose answers are known. Random-walk prices would teach a model
nothing, and a Markov chain on move signs would teach it an artefact; so the ticks
come from a small market microstructure, and the tick-level dependence measured on
Bitstamp BTC-USD trades (Aug 2018) emerges from it:

* orders arrive in bursts (activity regimes with their own pace and volatility);
* the taker side persists (a buy tends to follow a buy);
* an order may fill in several prints at one timestamp, walking the book one level
  at a time, so its prints repeat a price (zero moves) or continue in its direction;
* quotes are sticky: until they are re-anchored to the latent mid, the next
  same-side order prints where the last one left off (more zero moves), and an
  order on the other side prints across the spread (bid-ask bounce, reversals);
* the latent mid diffuses with the regime's volatility and takes a permanent
  share of the walked distance (price impact), so prices wander but stay tied to it.

Everything is drawn in fixed blocks of orders from one generator, so the same seed
yields the same ticks however the output is sliced (`SyntheticMarket.ticks_until`
in small steps equals `generate` in one go).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.market.ticks import TickArrays

DEFAULT_START_TIME = 1_534_131_395.0  # first trade of the calibration file (2018-08-13)
DEFAULT_START_PRICE = 6_400.0


@dataclass(frozen=True)
class SyntheticParams:
    """Market dynamics; the defaults reproduce the Bitstamp BTC-USD tick statistics.

    Relative quantities (spread, level step, volatility) are fractions of price, so
    the same dynamics hold at any `start_price`.
    """

    tick_size: float = 0.01
    # Trade times are floored to this many seconds, as Bitstamp prints whole
    # seconds (a third of real gaps are 0 s); 0 keeps fractional times.
    time_resolution: float = 1.0
    # Activity regimes (quiet, normal, busy): mean seconds between orders, latent
    # log-mid volatility per sqrt(second), a factor on spread and book level
    # distance (books are thinner when busy), and mean regime duration in orders.
    regime_gap_s: tuple[float, ...] = (14.0, 4.0, 1.2)
    regime_vol: tuple[float, ...] = (0.8e-4, 1.2e-4, 2.2e-4)
    regime_spread: tuple[float, ...] = (0.8, 1.0, 1.5)
    regime_orders: tuple[float, ...] = (300.0, 600.0, 300.0)
    # Gamma shape of the gaps within a regime: < 1 makes arrivals clump further.
    gap_shape: float = 0.6
    # Taker side runs (a buy tends to follow a buy: parent orders split in pieces):
    # orders per same-side run, 1 + negative binomial (mean - 1, shape); shape 1 is a
    # Markov chain, smaller shapes give the long runs of split orders.
    side_run: float = 2.7
    side_run_shape: float = 1.0
    # Prints per order: 1 + negative binomial (mean, shape); a small shape gives
    # mostly single prints and a few large sweeps.
    extra_fills: float = 0.6
    fills_shape: float = 0.5
    # Prints a book level absorbs before the next print walks one level deeper:
    # 1 + negative binomial (mean, shape); a deep level pins the price for a while.
    level_fills: float = 1.0
    level_shape: float = 0.5
    level_step: float = 1.2e-4  # mean distance between book levels (exponential, >= 1 tick)
    half_spread: float = 1.2e-4  # median half-spread when quotes are re-anchored
    half_spread_sigma: float = 0.6  # its lognormal dispersion
    quote_memory_s: float = 3.0  # quotes re-anchor to the mid with P = 1 - exp(-gap / this)
    impact: float = 0.5  # share of the walked distance that moves the latent mid
    # Trade size (BTC): lognormal with a fatter small side (bots' dust trades) than
    # large side, part of it snapped to round lots as people type them.
    amount_median: float = 0.085
    amount_sigma_small: float = 2.6
    amount_sigma_large: float = 1.8
    round_lot_prob: float = 0.15  # share of sizes snapped to a round lot (0.01, 0.5, 1, ...)
    block_orders: int = 8192  # orders per internal block; part of the seed's meaning

    def __post_init__(self) -> None:
        k = len(self.regime_gap_s)
        lens = {len(self.regime_vol), len(self.regime_spread), len(self.regime_orders)}
        if k < 1 or lens != {k}:
            raise ValueError("each regime_* tuple needs one value per regime")
        if self.side_run < 1 or self.side_run_shape <= 0:
            raise ValueError("side_run must be >= 1 and side_run_shape > 0")
        if min(self.extra_fills, self.level_fills) < 0 or min(self.fills_shape, self.level_shape) <= 0:
            raise ValueError("extra_fills and level_fills must be >= 0, their shapes > 0")
        if self.tick_size <= 0 or self.time_resolution < 0 or self.block_orders < 1:
            raise ValueError("tick_size must be > 0, time_resolution >= 0, block_orders >= 1")


_LOTS = np.array([0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0])


class SyntheticMarket:
    """A live-like source: `ticks_until(t)` returns the trades up to wall time t, once each.

    The process is generated ahead in blocks and buffered, so how callers slice it
    never changes what it is.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        start_time: float = DEFAULT_START_TIME,
        start_price: float = DEFAULT_START_PRICE,
        params: SyntheticParams | None = None,
    ) -> None:
        if not start_price > 0:
            raise ValueError("start_price must be > 0")
        self.params = p = params or SyntheticParams()
        self._rng = np.random.default_rng(seed)
        self._t = float(start_time)
        self._logmid = float(np.log(start_price))
        self._regime = len(p.regime_gap_s) // 2
        self._side, self._side_left = 1, 0  # current taker side, orders left in its run
        # Per side (+1 ask, -1 bid): quote in ticks and prints left at that level
        # (None: a fresh level). The first order always re-anchors the quotes.
        self._quote: dict[int, tuple[int, int | None]] = {1: (0, None), -1: (0, None)}
        self._orders = 0
        self._next_id = 0
        self._last_time: float | None = None
        self._buf: list[TickArrays] = []
        self._buffered = 0

    @property
    def last_time(self) -> float | None:
        """Time of the last tick handed out; None before the first."""
        return self._last_time

    def ticks_until(self, t_end: float) -> TickArrays:
        """The ticks after the last ones returned, up to and including time t_end."""
        while not self._buffered or self._buf[-1].time[-1] <= t_end:
            self._add_block()
        parts = TickArrays.concat(self._buf)
        k = int(np.searchsorted(parts.time, t_end, side="right"))
        return self._hand_out(parts, k)

    def take(self, n: int) -> TickArrays:
        """The next n ticks, whatever their times."""
        if n < 0:
            raise ValueError("n must be >= 0")
        while self._buffered < n:
            self._add_block()
        return self._hand_out(TickArrays.concat(self._buf), n)

    def _hand_out(self, parts: TickArrays, k: int) -> TickArrays:
        out, rest = parts[:k], parts[k:]
        self._buf, self._buffered = ([rest] if len(rest) else []), len(rest)
        if k:
            self._last_time = float(out.time[-1])
            ids = np.arange(self._next_id, self._next_id + k).astype(str).astype(object)
            self._next_id += k
            out = TickArrays(out.time, out.price, out.amount, ids, out.side)
        return out

    def _add_block(self) -> None:
        p, rng, m = self.params, self._rng, self.params.block_orders
        gap_s, vol = np.asarray(p.regime_gap_s), np.asarray(p.regime_vol)
        # Regimes: a Markov chain drawn as runs (geometric lengths are memoryless, so
        # cutting a run at the block edge and redrawing it changes nothing).
        n_reg = len(gap_s)
        run_reg = (self._regime + np.cumsum(rng.integers(1, max(n_reg, 2), size=m))) % n_reg
        run_reg[0] = self._regime
        run_len = rng.geometric(1.0 / np.maximum(np.asarray(p.regime_orders)[run_reg], 1.0))
        reg = np.repeat(run_reg, run_len)[:m]
        # Taker side of each order: alternating runs; the block's first run finishes
        # the carried one.
        runs = 1 + _neg_binomial(rng, p.side_run - 1, p.side_run_shape, m + 1)
        if self._side_left:
            runs[0] = self._side_left
        else:
            self._side = -self._side
        ends = np.cumsum(runs)
        side_o = np.repeat(np.where(np.arange(m + 1) % 2 == 0, self._side, -self._side), runs)[:m]
        side_left = int(ends[np.searchsorted(ends, m)] - m)
        gap_o = rng.gamma(p.gap_shape, gap_s[reg] / p.gap_shape)
        n_fill = 1 + _neg_binomial(rng, p.extra_fills, p.fills_shape, m)
        refresh_o = rng.random(m) < -np.expm1(-gap_o / p.quote_memory_s)
        refresh_o[0] |= self._orders == 0
        # Expand orders into fills; later fills share the order's timestamp.
        o = np.repeat(np.arange(m), n_fill)
        n = len(o)
        first = np.zeros(n, dtype=bool)
        first[np.cumsum(n_fill) - n_fill] = True
        side, gap, thin = side_o[o], np.where(first, gap_o[o], 0.0), np.asarray(p.regime_spread)[reg[o]]
        diffusion = self._logmid + np.cumsum(vol[reg[o]] * np.sqrt(gap) * rng.standard_normal(n))
        # Quote segments: each re-anchoring starts one; the block's first segment
        # continues the carried quotes unless its first order re-anchors.
        seg_start = first & refresh_o[o]
        seg_start[0] = True
        seg, idx = np.cumsum(seg_start) - 1, np.flatnonzero(seg_start)
        level_ticks = np.maximum(1, np.rint(np.exp(diffusion) * thin * rng.exponential(p.level_step, n) / p.tick_size)).astype(np.int64)
        offset = np.empty(n, dtype=np.int64)
        walked = np.empty(n, dtype=np.int64)
        rem = {}
        for sgn in (1, -1):
            mask = side == sgn
            carried = None if refresh_o[0] else self._quote[sgn][1]
            f, offset_f, walked_f, rem[sgn] = _walk_book(rng, p, mask, seg, idx, level_ticks, carried)
            offset[f], walked[f] = offset_f, walked_f
        # Latent mid: diffusion plus a permanent share of the distance walked (impact).
        push = p.impact * side * walked * p.tick_size / np.exp(diffusion)
        logmid = diffusion + np.concatenate(([0.0], np.cumsum(push)[:-1]))
        h = thin[idx] * p.half_spread * np.exp(p.half_spread_sigma * rng.standard_normal(len(idx)))
        ask0 = np.ceil(np.exp(logmid[idx] + h) / p.tick_size).astype(np.int64)
        bid0 = np.minimum(np.floor(np.exp(logmid[idx] - h) / p.tick_size).astype(np.int64), ask0 - 1)
        if not refresh_o[0]:
            ask0[0], bid0[0] = self._quote[1][0], self._quote[-1][0]
        price = np.maximum(np.where(side > 0, ask0[seg] + offset, bid0[seg] - offset), 1)
        t = self._t + np.cumsum(gap)
        times = np.floor(t / p.time_resolution) * p.time_resolution if p.time_resolution else t
        z = rng.standard_normal(n)
        amount = p.amount_median * np.exp(z * np.where(z < 0, p.amount_sigma_small, p.amount_sigma_large))
        lot = rng.random(n) < p.round_lot_prob
        near = _LOTS[np.abs(np.log(amount)[:, None] - np.log(_LOTS)).argmin(axis=1)]
        amount = np.maximum(np.round(np.where(lot, near, amount), 8), 1e-8)
        # Carry the state the next block continues from.
        last = seg[-1]
        for sgn, q0 in ((1, ask0[last]), (-1, bid0[last])):
            f = np.flatnonzero((side == sgn) & (seg == last))
            q = price[f[-1]] if len(f) else q0
            self._quote[sgn] = (int(q), rem[sgn] if len(f) else None)
        self._t, self._logmid = float(t[-1]), float(logmid[-1] + push[-1])
        self._regime, self._side, self._side_left = int(reg[-1]), int(side_o[-1]), side_left
        self._orders += m
        self._buf.append(
            TickArrays(
                times, np.round(price * p.tick_size, 9), amount, None,
                np.where(side > 0, "buy", "sell").astype(object),
            )
        )
        self._buffered += n

def _neg_binomial(rng: np.random.Generator, mean: float, shape: float, size: int) -> np.ndarray:
    if mean <= 0:
        return np.zeros(size, dtype=np.int64)
    return rng.negative_binomial(shape, shape / (shape + mean), size)


def _walk_book(
    rng: np.random.Generator,
    p: SyntheticParams,
    mask: np.ndarray,
    seg: np.ndarray,
    idx: np.ndarray,
    level_ticks: np.ndarray,
    carried: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Where one side's prints land, as tick offsets from their segment's quote.

    Within a quote segment this side's prints consume book levels in turn, each
    absorbing a random number of prints; the k-th print sits at the level where
    the running capacity passes k. Segment s may use at most as many levels as it
    has prints, so giving it the levels from its first print's rank onward keeps
    every segment's levels apart without a loop. Returns the prints' indices,
    their offsets, the ticks each walked, and the prints left at the last level.
    """
    f = np.flatnonzero(mask)
    nf = len(f)
    start = (np.cumsum(mask) - mask)[idx][seg[f]]  # first level of each print's segment
    k = np.arange(nf) - start  # rank of the print within its segment
    cap = 1 + _neg_binomial(rng, p.level_fills, p.level_shape, nf + 1)
    if carried is not None:
        cap[0] = carried  # may be 0: the carried level is used up, the next print walks
    filled = np.concatenate(([0], np.cumsum(cap)))
    used = filled[start] + k
    level = np.searchsorted(filled, used, side="right") - 1
    depth = np.cumsum(np.concatenate((level_ticks[f], [1])))
    offset = depth[level] - depth[start]
    walked = offset - np.where(k > 0, np.concatenate(([0], offset[:-1])), 0)
    left = int(filled[level[-1] + 1] - used[-1] - 1) if nf else 0
    return f, offset, walked, left


def generate(
    n: int,
    *,
    seed: int = 0,
    start_time: float = DEFAULT_START_TIME,
    start_price: float = DEFAULT_START_PRICE,
    params: SyntheticParams | None = None,
) -> TickArrays:
    """n synthetic ticks; the same arguments always give the same ticks."""
    market = SyntheticMarket(seed, start_time=start_time, start_price=start_price, params=params)
    return market.take(n)


def tick_stats(ticks: TickArrays) -> dict[str, float]:
    """The tick-level dependence a next-tick model can learn, to compare sources.

    A move is the sign of p[i+1] - p[i]; a rise is a strictly positive move, the
    label the models predict.
    """
    s = np.sign(np.diff(np.asarray(ticks.price, dtype=np.float64)))
    prev, rise = s[:-1], s[1:] > 0

    def cond(v: int) -> float:
        m = prev == v
        return float(rise[m].mean()) if m.any() else float("nan")

    return {
        "n": float(len(ticks)),
        "zero_frac": float((s == 0).mean()) if len(s) else float("nan"),
        "rise_rate": float((s > 0).mean()) if len(s) else float("nan"),
        "p_rise_after_up": cond(1),
        "p_rise_after_down": cond(-1),
        "p_rise_after_zero": cond(0),
    }
