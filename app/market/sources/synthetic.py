"""A seeded synthetic market: ticks with the dependence real trades have, no network needed.

A fresh install trains and serves on this before any exchange is configured, and
tests need data whose answers are known. A random walk would teach a model nothing
and a Markov chain on move signs an artefact, so the ticks come from a small market
microstructure, and the tick-level dependence of Bitstamp BTC-USD trades (Aug 2018)
emerges from it:

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
    # seconds (over a third of real gaps are 0 s); 0 keeps fractional times.
    time_resolution: float = 1.0
    # Activity regimes (quiet, normal, busy), a Markov chain over orders: mean
    # seconds between orders, latent log-mid volatility per sqrt(second), a factor
    # on spread and level distance (books thin out when busy), mean run in orders.
    # Busy spells are fast and volatile, which gives bursts and volatility clusters.
    regime_gap_s: tuple[float, ...] = (15.0, 4.3, 1.3)
    regime_vol: tuple[float, ...] = (8.0e-5, 1.2e-4, 4.9e-4)
    regime_spread: tuple[float, ...] = (0.8, 1.0, 2.7)
    regime_orders: tuple[float, ...] = (100.0, 200.0, 100.0)
    gap_shape: float = 1.0  # gamma shape of gaps within a regime (1: exponential)
    # Taker side runs, 1 + negative binomial (mean - 1, shape) orders: a buy tends
    # to follow a buy, and a small shape gives the long runs of split parent orders.
    side_run: float = 3.2
    side_run_shape: float = 0.3
    # Prints per order, 1 + negative binomial (mean, shape): mostly single prints,
    # now and then a sweep through several.
    extra_fills: float = 0.36
    fills_shape: float = 0.12
    # Prints a book level absorbs before the next one walks a level deeper,
    # 1 + negative binomial (mean, shape): a deep level pins the price for a while.
    level_fills: float = 2.1
    level_shape: float = 0.26
    level_step: float = 6.8e-5  # mean distance between book levels (exponential, >= 1 tick)
    half_spread: float = 5.0e-5  # median half-spread when quotes re-anchor to the mid
    half_spread_sigma: float = 0.7  # its lognormal dispersion
    quote_memory_s: float = 6.3  # quotes re-anchor before an order with P = 1 - exp(-gap / this)
    impact: float = 0.53  # share of the distance an order walks that moves the latent mid
    # Trade size (BTC): lognormal with a fatter small side (bots' dust trades) than
    # large side, part of it snapped to round lots as people type them.
    amount_median: float = 0.085
    amount_sigma_small: float = 2.6
    amount_sigma_large: float = 1.8
    round_lot_prob: float = 0.15
    block_orders: int = 8192  # orders per internal block; part of what a seed means

    def __post_init__(self) -> None:
        k = len(self.regime_gap_s)
        lens = {len(self.regime_vol), len(self.regime_spread), len(self.regime_orders)}
        if k < 1 or lens != {k}:
            raise ValueError("each regime_* tuple needs one value per regime")
        if self.side_run < 1:
            raise ValueError("side_run must be >= 1")
        shapes = (self.side_run_shape, self.fills_shape, self.level_shape)
        if min(self.extra_fills, self.level_fills) < 0 or min(shapes) <= 0:
            raise ValueError("extra_fills and level_fills must be >= 0, the *_shape values > 0")
        if self.tick_size <= 0 or self.time_resolution < 0 or self.block_orders < 1:
            raise ValueError("tick_size must be > 0, time_resolution >= 0, block_orders >= 1")


_LOTS = np.array([0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0])


class SyntheticMarket:
    """A live-like source: `ticks_until(t)` returns the trades up to wall time t, once each.

    The process is generated ahead in blocks and buffered, so how callers slice it
    never changes what it is. A live service opens it at its own clock (say, now
    minus the history it wants), since every second from `start_time` is generated.
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
        if not np.isfinite(t_end):
            raise ValueError("t_end must be a finite time")
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
        """Draw the next block of orders, expand them into prints and price them."""
        p, rng, m = self.params, self._rng, self.params.block_orders
        reg, side_o = self._regimes(m), self._sides(m)
        gap_o = rng.gamma(p.gap_shape, np.asarray(p.regime_gap_s)[reg] / p.gap_shape)
        n_fill = 1 + _neg_binomial(rng, p.extra_fills, p.fills_shape, m)
        anchor_o = rng.random(m) < -np.expm1(-gap_o / p.quote_memory_s)
        anchor_o[0] |= self._orders == 0
        # Expand orders into prints; an order's later prints share its timestamp.
        o = np.repeat(np.arange(m), n_fill)
        n = len(o)
        first = np.zeros(n, dtype=bool)
        first[np.cumsum(n_fill) - n_fill] = True
        side, thin = side_o[o], np.asarray(p.regime_spread)[reg[o]]
        gap = np.where(first, gap_o[o], 0.0)
        shocks = np.asarray(p.regime_vol)[reg[o]] * np.sqrt(gap) * rng.standard_normal(n)
        diffusion = self._logmid + np.cumsum(shocks)
        mid0 = np.exp(diffusion)  # the mid before impact: close enough to size levels in ticks
        step_rel = thin * rng.exponential(p.level_step, n)  # from one book level to the next
        steps = np.maximum(1, np.rint(mid0 * step_rel / p.tick_size)).astype(np.int64)
        # Quote segments: each re-anchoring starts one; the block's first segment
        # continues the carried quotes unless its first order re-anchors.
        seg_start = first & anchor_o[o]
        seg_start[0] = True
        seg, idx = np.cumsum(seg_start) - 1, np.flatnonzero(seg_start)
        offset, walked = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        left = {}
        for sgn in (1, -1):
            carried = None if anchor_o[0] else self._quote[sgn][1]
            f, off, walk, left[sgn] = _walk_book(rng, p, side == sgn, seg, idx, steps, carried)
            offset[f], walked[f] = off, walk
        # Latent mid: diffusion plus a permanent share of the distance walked (impact).
        push = p.impact * side * walked * p.tick_size / mid0
        logmid = diffusion + np.concatenate(([0.0], np.cumsum(push)[:-1]))
        h = thin[idx] * p.half_spread * np.exp(p.half_spread_sigma * rng.standard_normal(len(idx)))
        ask0 = np.ceil(np.exp(logmid[idx] + h) / p.tick_size).astype(np.int64)
        bid0 = np.floor(np.exp(logmid[idx] - h) / p.tick_size).astype(np.int64)
        bid0 = np.minimum(bid0, ask0 - 1)
        if not anchor_o[0]:
            ask0[0], bid0[0] = self._quote[1][0], self._quote[-1][0]
        price = np.maximum(np.where(side > 0, ask0[seg] + offset, bid0[seg] - offset), 1)
        t = self._t + np.cumsum(gap)
        res = p.time_resolution
        # Carry what the next block continues from.
        for sgn, quote in ((1, ask0[-1]), (-1, bid0[-1])):
            mine = np.flatnonzero((side == sgn) & (seg == seg[-1]))
            fresh = (int(quote), None)
            self._quote[sgn] = (int(price[mine[-1]]), left[sgn]) if len(mine) else fresh
        self._t, self._logmid = float(t[-1]), float(logmid[-1] + push[-1])
        self._orders += m
        self._buf.append(
            TickArrays(
                np.floor(t / res) * res if res else t,
                np.round(price * p.tick_size, 9),
                _amounts(rng, p, n),
                None,
                np.where(side > 0, "buy", "sell").astype(object),
            )
        )
        self._buffered += n

    def _regimes(self, m: int) -> np.ndarray:
        """Activity regime per order: a Markov chain drawn as runs (geometric run
        lengths are memoryless, so cutting a run at the block edge changes nothing)."""
        p, rng = self.params, self._rng
        k = len(p.regime_gap_s)
        run_reg = (self._regime + np.cumsum(rng.integers(1, max(k, 2), size=m))) % k
        run_reg[0] = self._regime
        run_len = rng.geometric(1.0 / np.maximum(np.asarray(p.regime_orders)[run_reg], 1.0))
        reg = np.repeat(run_reg, run_len)[:m]
        self._regime = int(reg[-1])
        return reg

    def _sides(self, m: int) -> np.ndarray:
        """Taker side per order: alternating runs; the block's first run finishes the
        carried one (run lengths are not memoryless, so what is left is carried)."""
        p = self.params
        runs = 1 + _neg_binomial(self._rng, p.side_run - 1, p.side_run_shape, m + 1)
        if self._side_left:
            runs[0] = self._side_left
        else:
            self._side = -self._side
        sides = np.repeat(np.where(np.arange(m + 1) % 2 == 0, self._side, -self._side), runs)
        ends = np.cumsum(runs)
        self._side_left = int(ends[np.searchsorted(ends, m)] - m)
        self._side = int(sides[m - 1])
        return sides[:m]


def _amounts(rng: np.random.Generator, p: SyntheticParams, n: int) -> np.ndarray:
    z = rng.standard_normal(n)
    sigma = np.where(z < 0, p.amount_sigma_small, p.amount_sigma_large)
    amount = p.amount_median * np.exp(sigma * z)
    lot = rng.random(n) < p.round_lot_prob
    nearest = _LOTS[np.abs(np.log(amount)[:, None] - np.log(_LOTS)).argmin(axis=1)]
    return np.maximum(np.round(np.where(lot, nearest, amount), 8), 1e-8)  # satoshi precision


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
    steps: np.ndarray,
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
    depth = np.cumsum(np.concatenate((steps[f], [1])))
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
    prev, rise, every = s[:-1], s[1:] > 0, np.ones(len(s), dtype=bool)

    def share(hit: np.ndarray, among: np.ndarray) -> float:
        return float(hit[among].mean()) if among.any() else float("nan")

    return {
        "n": float(len(ticks)),
        "zero_frac": share(s == 0, every),
        "rise_rate": share(s > 0, every),
        "p_rise_after_up": share(rise, prev > 0),
        "p_rise_after_down": share(rise, prev < 0),
        "p_rise_after_zero": share(rise, prev == 0),
    }
