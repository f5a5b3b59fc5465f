// One card per market: a live uPlot chart of price and rise probability fed by the
// market's event stream, and the market's ingestion status.

import * as fmt from "./format.js";

const MAX_POINTS = 600; // ticks on the chart

export class MarketCard {
  constructor(exchange, symbol, container) {
    this.exchange = exchange;
    this.symbol = symbol;
    const tpl = document.getElementById("market-card");
    this.root = tpl.content.firstElementChild.cloneNode(true);
    this.root.dataset.market = `${exchange}:${symbol}`;
    this.root.querySelector(".market-name").textContent = `${exchange}:${symbol}`;
    container.appendChild(this.root);
    this.data = [[], [], []]; // time, price, probability
    this.updates = 0;
    this.dirty = false;
    this.chart = this.makeChart();
    new ResizeObserver(() => this.resize()).observe(this.root.querySelector(".chart"));
  }

  $(selector) {
    return this.root.querySelector(selector);
  }

  makeChart() {
    const box = this.$(".chart");
    const opts = {
      width: Math.max(box.clientWidth, 300),
      height: 260,
      scales: { x: { time: true }, p: { range: [0, 1] } },
      series: [
        {},
        { label: "price", scale: "price", stroke: "#2563eb", width: 1.5,
          value: (u, v) => fmt.price(v) },
        { label: "P(rise)", scale: "p", stroke: "#ea580c", width: 1, spanGaps: false,
          value: (u, v) => fmt.probability(v) },
      ],
      axes: [
        {},
        { scale: "price", size: 70 },
        { scale: "p", side: 1, grid: { show: false }, size: 45 },
      ],
      legend: { live: true },
    };
    return new uPlot(opts, this.data, box);
  }

  resize() {
    const width = this.$(".chart").clientWidth;
    if (width > 0 && Math.abs(width - this.chart.width) > 1) {
      this.chart.setSize({ width, height: 260 });
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
      this.data = [[], [], []];
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
    const [t, p, prob] = this.data;
    t.push(tick.time);
    p.push(tick.price);
    prob.push(tick.probability);
    if (t.length > MAX_POINTS) {
      t.shift();
      p.shift();
      prob.shift();
    }
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
      const tick = this.last;
      this.$(".price").textContent = tick ? fmt.price(tick.price) : "–";
      const probability = this.$(".probability");
      probability.textContent = tick ? fmt.probability(tick.probability) : "–";
      probability.dataset.value = tick && tick.probability != null ? String(tick.probability) : "";
      probability.dataset.decision = tick && tick.decision != null ? String(tick.decision) : "";
      probability.title = tick && tick.model_id ? `model ${tick.model_id}` : "no model loaded yet";
      this.$(".updates").textContent = String(this.updates);
      this.root.dataset.updates = String(this.updates);
    });
  }

  showStatus(status) {
    this.$(".ticks-stored").textContent = status.ticks_stored.toLocaleString();
    this.$(".lag").textContent = fmt.duration(status.lag_s);
    this.$(".last-pull").textContent = status.ingesting ? fmt.clock(status.last_pull) : "ingestion off";
    this.$(".next-run").textContent = fmt.clock(status.next_run);
    const error = this.$(".last-error");
    error.textContent = status.last_error || "none";
    error.classList.toggle("error", Boolean(status.last_error));
  }
}
