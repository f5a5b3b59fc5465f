// One card per market: a live uPlot chart of price and rise probability fed by the
// market's event stream, and the market's ingestion status.

import * as fmt from "./format.js";
import { Gaps } from "./gaps.js";

const MAX_POINTS = 600; // ticks on the chart
const CHART_HEIGHT = 260;

// uPlot draws its time axis in the browser's zone unless told otherwise: UTC, as labelled.
const utc = (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC");

// The legend shows the point under the pointer; with the pointer elsewhere (idx null), the
// latest tick, rather than a row of dashes.
// `mark` tells the latest apart (on the time only: one mark says it of the whole row).
function legendValue(format, mark = "") {
  return (u, v, seriesIdx, idx) => {
    if (idx != null) return format(v);
    const column = u.data[seriesIdx];
    const last = column.length ? column[column.length - 1] : null;
    return last == null ? format(null) : `${format(last)}${mark}`;
  };
}

export class MarketCard {
  constructor(exchange, symbol, container) {
    this.exchange = exchange;
    this.symbol = symbol;
    const tpl = document.getElementById("market-card");
    this.root = tpl.content.firstElementChild.cloneNode(true);
    this.root.dataset.market = `${exchange}:${symbol}`;
    this.root.querySelector(".market-name").textContent = `${exchange}:${symbol}`;
    container.appendChild(this.root);
    this.data = [[], [], [], []]; // time, price, probability, decision threshold
    this.updates = 0;
    this.dirty = false;
    this.gaps = new Gaps(exchange, symbol);
    this.chart = this.makeChart();
    new ResizeObserver(() => this.resize()).observe(this.$(".chart"));
  }

  $(selector) {
    return this.root.querySelector(selector);
  }

  makeChart() {
    const box = this.$(".chart");
    const opts = {
      width: Math.max(box.clientWidth, 1),
      height: CHART_HEIGHT,
      tzDate: utc,
      scales: { x: { time: true }, p: { range: [0, 1] } },
      series: [
        { label: "time (UTC)", value: legendValue(fmt.utcDateTime, " (latest)") },
        { label: "price", scale: "price", stroke: "#2563eb", width: 1.5, value: legendValue(fmt.price) },
        { label: "P(rise)", scale: "p", stroke: "#ea580c", width: 1, spanGaps: false,
          value: legendValue(fmt.probability) },
        { label: "threshold", scale: "p", stroke: "#111827", width: 1.5, dash: [6, 4],
          points: { show: false }, value: legendValue(fmt.probability) },
      ],
      axes: [
        { label: "time (UTC)", labelSize: 20, values: (u, splits) => fmt.timeAxis(splits) },
        { scale: "price", label: "price", size: 64, labelSize: 20 },
        { scale: "p", label: "P(rise)", side: 1, grid: { show: false }, size: 40, labelSize: 20 },
      ],
      legend: { live: true },
      plugins: [this.gaps.plugin()],
    };
    return new uPlot(opts, this.data, box);
  }

  // uPlot has a fixed size in pixels: follow the card's width (a window resized, a phone turned).
  resize() {
    const width = this.$(".chart").clientWidth;
    if (width > 0 && Math.abs(width - this.chart.width) > 1) {
      this.chart.setSize({ width, height: CHART_HEIGHT });
    }
  }

  // Server-Sent Events: `reset` starts the series afresh, `tick` adds one point. The
  // browser reconnects by itself and the server resumes after the last event id.
  connect() {
    const path = `/stream/${encodeURIComponent(this.exchange)}/${encodeURIComponent(this.symbol)}`;
    this.source = new EventSource(`${path}?backlog=${MAX_POINTS}`);
    this.source.addEventListener("open", () => this.setStreamState("live", "live"));
    this.source.addEventListener("error", () => {
      if (this.source.readyState !== EventSource.CLOSED) {
        this.setStreamState("reconnecting", "reconnecting…"); // the browser retries by itself
        return;
      }
      // An HTTP error (503: busy or restarting) stops EventSource for good: try again later.
      this.setStreamState("closed", "closed, retrying in 10 s");
      setTimeout(() => this.connect(), 10000);
    });
    this.source.addEventListener("reset", () => {
      this.data = [[], [], [], []];
      this.schedule();
    });
    this.source.addEventListener("tick", (event) => this.addTick(JSON.parse(event.data)));
  }

  setStreamState(state, text) {
    const chip = this.$(".stream-state");
    chip.dataset.state = state;
    chip.textContent = text;
  }

  addTick(tick) {
    const values = [tick.time, tick.price, tick.probability, tick.threshold ?? null];
    this.data.forEach((column, i) => column.push(values[i]));
    if (this.data[0].length > MAX_POINTS) this.data.forEach((column) => column.shift());
    this.updates += 1;
    this.last = tick;
    this.schedule();
  }

  // Many ticks can arrive in one burst (the backlog, a pull): draw once per frame.
  schedule() {
    if (this.dirty) return;
    this.dirty = true;
    requestAnimationFrame(() => {
      this.dirty = false;
      this.chart.setData(this.data);
      if (this.chart.cursor.idx == null) this.chart.setLegend(); // the latest values, as they change
      const tick = this.last;
      this.$(".price").textContent = tick ? fmt.price(tick.price) : "–";
      const probability = this.$(".probability");
      probability.textContent = tick ? fmt.probability(tick.probability) : "–";
      probability.dataset.value = tick && tick.probability != null ? String(tick.probability) : "";
      probability.dataset.decision = tick && tick.decision != null ? String(tick.decision) : "";
      probability.title = tick && tick.model_id ? `model ${tick.model_id}` : "no model loaded yet";
      const threshold = this.$(".threshold");
      threshold.textContent = tick && tick.threshold != null ? fmt.probability(tick.threshold) : "no model yet";
      threshold.dataset.value = tick && tick.threshold != null ? String(tick.threshold) : "";
      this.$(".updates").textContent = String(this.updates);
      this.root.dataset.updates = String(this.updates);
    });
  }

  // The market's holes: marked on the chart, summed up under it.
  async refreshCoverage() {
    await this.gaps.refresh();
    this.$(".coverage").textContent = this.gaps.summary();
  }

  // One entry of GET /markets. A market that is stored but not in TICKCAST_MARKETS (its ticks
  // were imported) has no pulls: `scheduled: false`.
  showStatus(status) {
    const unscheduled = status.scheduled === false;
    this.root.dataset.scheduled = String(!unscheduled);
    const stored = status.ticks_stored;
    this.$(".ticks-stored").textContent = typeof stored === "number" ? stored.toLocaleString() : "–";
    this.$(".lag").textContent = fmt.duration(status.lag_s);
    let lastPull = fmt.clock(status.last_pull);
    if (unscheduled) lastPull = "not scheduled (imported)";
    else if (status.ingesting === false) lastPull = "ingestion off";
    this.$(".last-pull").textContent = lastPull;
    this.$(".next-run").textContent = unscheduled ? "–" : fmt.clock(status.next_run);
    const error = this.$(".last-error");
    error.textContent = status.last_error || "none";
    error.classList.toggle("error", Boolean(status.last_error));
  }
}
