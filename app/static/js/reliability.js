// The reliability diagram, drawn by hand in SVG: for each bin of predicted probability, the
// mean prediction (x) against the share of rises that followed (y). A calibrated model sits on
// the diagonal; a dot's area is its bin's share of the outcomes, and the bars along the bottom
// count them, so a stray dot from a bin of three outcomes does not read like one of three hundred.

const NS = "http://www.w3.org/2000/svg";
const WIDTH = 300; // the drawing's own units; the SVG scales to its box
const PAD = { left: 44, right: 12, top: 12 };
const PLOT = WIDTH - PAD.left - PAD.right; // a square plot: the same scale on both axes
const STRIP = { top: PAD.top + PLOT + 20, height: 22 }; // the count bars, under the tick labels
const HEIGHT = STRIP.top + STRIP.height + 24; // and the x axis' title under them
const MAX_RADIUS = 11;

function node(tag, attrs = {}, text) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  if (text != null) n.textContent = String(text);
  return n;
}

const x = (p) => PAD.left + p * PLOT;
const y = (p) => PAD.top + (1 - p) * PLOT;

function axes() {
  const g = node("g", { class: "axes" });
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    g.append(
      node("line", { x1: x(t), x2: x(t), y1: y(0), y2: y(1), class: "grid" }),
      node("line", { x1: x(0), x2: x(1), y1: y(t), y2: y(t), class: "grid" }),
      node("text", { x: x(t), y: y(0) + 14, "text-anchor": "middle" }, t),
      node("text", { x: x(0) - 6, y: y(t) + 4, "text-anchor": "end" }, t),
    );
  }
  g.append(
    node("rect", { x: x(0), y: y(1), width: PLOT, height: PLOT, class: "frame" }),
    node("line", { x1: x(0), y1: y(0), x2: x(1), y2: y(1), class: "diagonal" }),
    node("text", { x: x(0.5), y: HEIGHT - 6, "text-anchor": "middle" }, "mean predicted P(rise)"),
    node("text", { x: 12, y: y(0.5), "text-anchor": "middle", transform: `rotate(-90 12 ${y(0.5)})` },
      "observed share of rises"),
  );
  return g;
}

const usable = (b) => b && b.count > 0 && Number.isFinite(b.mean_p) && Number.isFinite(b.observed);

function describe(b) {
  return `${b.lo.toFixed(1)}–${b.hi.toFixed(1)}: ${b.count.toLocaleString()} outcomes, ` +
    `mean P(rise) ${b.mean_p.toFixed(3)}, observed ${b.observed.toFixed(3)}`;
}

// The count bars: one per bin across its [lo, hi) range, under the plot.
function countBars(bins, most) {
  const g = node("g", { class: "counts" });
  const base = STRIP.top + STRIP.height;
  for (const b of bins) {
    if (!(b && b.count > 0) || !Number.isFinite(b.lo) || !Number.isFinite(b.hi)) continue;
    const h = Math.max(1, (b.count / most) * STRIP.height);
    const bar = node("rect", {
      x: x(b.lo) + 1, width: Math.max(1, (b.hi - b.lo) * PLOT - 2), y: base - h, height: h,
      class: "count", "data-count": b.count,
    });
    bar.append(node("title", {}, `${b.lo.toFixed(1)}–${b.hi.toFixed(1)}: ${b.count.toLocaleString()} outcomes`));
    g.append(bar);
  }
  return g;
}

// Draws `bins` (GET /markets/{exchange}/{symbol}/live, a model's `reliability`) into `svg`,
// replacing what was there; returns how many bins had outcomes.
export function drawReliability(svg, bins) {
  const list = Array.isArray(bins) ? bins : [];
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  svg.setAttribute("role", "img");
  const total = list.reduce((s, b) => s + (b && b.count > 0 ? b.count : 0), 0);
  const most = list.reduce((m, b) => Math.max(m, b && b.count > 0 ? b.count : 0), 0);
  const shown = list.filter(usable);
  const dots = node("g", { class: "bins" });
  for (const b of shown) {
    const r = Math.max(2.5, Math.sqrt(b.count / most) * MAX_RADIUS);
    const dot = node("circle", {
      cx: x(Math.min(1, Math.max(0, b.mean_p))), cy: y(Math.min(1, Math.max(0, b.observed))), r,
      class: "bin", "data-count": b.count, "data-mean-p": b.mean_p, "data-observed": b.observed,
    });
    dot.append(node("title", {}, describe(b)));
    dots.append(dot);
  }
  const parts = [axes(), countBars(list, most || 1), dots];
  if (!shown.length) {
    parts.push(node("text", { x: x(0.5), y: y(0.5), "text-anchor": "middle", class: "empty" },
      "no outcomes yet"));
  }
  svg.replaceChildren(...parts);
  svg.setAttribute("aria-label", shown.length
    ? `reliability of the last ${total.toLocaleString()} outcomes in ${shown.length} bins`
    : "reliability diagram: no outcomes yet");
  svg.dataset.bins = String(shown.length);
  svg.dataset.outcomes = String(total);
  return shown.length;
}
