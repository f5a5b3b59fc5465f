// Holes in a market's ticks, from GET /markets/{exchange}/{symbol}/coverage, marked on its
// chart: a shaded band where no trade arrived for longer than the service's gap (the line drawn
// across it is not a price anyone traded at), and a thin mark where trade ids are missing (trades
// the exchange made that were never stored). Only the holes inside the chart's time range show.

import { api } from "./api.js";
import * as fmt from "./format.js";

const finite = (v) => typeof v === "number" && Number.isFinite(v);

function band(className, left, width, title) {
  const div = document.createElement("div");
  div.className = `gap ${className}`;
  div.style.left = `${left}px`;
  div.style.width = `${width}px`;
  div.title = title;
  return div;
}

function timeGapTitle(g) {
  return `no trades for ${fmt.duration(g.seconds)}: ${fmt.utcDateTime(g.start)} to ${fmt.utcDateTime(g.end)} UTC`;
}

function idGapTitle(g) {
  const n = finite(g.missing) ? g.missing.toLocaleString() : "some";
  return `${n} trade ids missing between ${g.after_id} and ${g.before_id} ` +
    `(${fmt.utcDateTime(g.start)} to ${fmt.utcDateTime(g.end)} UTC)`;
}

export class Gaps {
  constructor(exchange, symbol) {
    this.path = `/markets/${encodeURIComponent(exchange)}/${encodeURIComponent(symbol)}/coverage`;
    this.coverage = null;
    this.error = null;
    this.chart = null;
  }

  // A uPlot plugin: redraws the marks whenever the chart redraws (new ticks move the range).
  plugin() {
    return { hooks: { draw: (u) => this.draw(u) } };
  }

  async refresh() {
    try {
      this.coverage = await api(this.path);
      this.error = null;
    } catch (e) {
      this.coverage = null; // 404: no such market (or no coverage route); 503: busy. Nothing to mark.
      this.error = e;
    }
    if (this.chart) this.draw(this.chart);
  }

  layer(u) {
    let layer = u.under.querySelector(".gap-layer");
    if (!layer) {
      layer = document.createElement("div");
      layer.className = "gap-layer";
      u.under.append(layer);
    }
    return layer;
  }

  draw(u) {
    this.chart = u;
    const layer = this.layer(u);
    const { min, max } = u.scales.x;
    const c = this.coverage;
    const marks = [];
    let timeGaps = 0;
    let idGaps = 0;
    if (c && finite(min) && finite(max) && max > min) {
      const px = (t) => u.valToPos(Math.min(max, Math.max(min, t)), "x");
      for (const g of c.time_gaps || []) {
        if (!finite(g.start) || !finite(g.end) || g.end < min || g.start > max) continue;
        const left = px(g.start);
        marks.push(band("gap-time", left, Math.max(2, px(g.end) - left), timeGapTitle(g)));
        timeGaps += 1;
      }
      for (const g of c.id_gaps || []) {
        if (!finite(g.start) || !finite(g.end) || g.end < min || g.start > max) continue;
        const left = px(g.start);
        marks.push(band("gap-ids", left, Math.max(2, px(g.end) - left), idGapTitle(g)));
        idGaps += 1;
      }
    }
    layer.replaceChildren(...marks);
    layer.dataset.timeGaps = String(timeGaps);
    layer.dataset.idGaps = String(idGaps);
  }

  // One line for the card: how whole the market's history is.
  summary() {
    const c = this.coverage;
    if (!c) return this.error && this.error.status === 404 ? "not available" : "–";
    if (!c.ticks) return "no ticks stored yet";
    const parts = [
      `${(c.time_gap_count ?? 0).toLocaleString()} time gap${c.time_gap_count === 1 ? "" : "s"}` +
        (finite(c.gap_s) ? ` (over ${fmt.duration(c.gap_s)})` : ""),
    ];
    if (c.id_coverage == null) {
      parts.push("no trade ids to check");
    } else {
      parts.push(`${(c.id_gap_count ?? 0).toLocaleString()} id gap${c.id_gap_count === 1 ? "" : "s"}` +
        ` (${(c.missing_ids ?? 0).toLocaleString()} ids missing, ${(c.id_coverage * 100).toFixed(2)}% stored)`);
    }
    if (c.truncated) parts.push("only the first gaps are listed");
    return parts.join(", ");
  }
}
