// The live panel of the chosen market, from GET /markets/{exchange}/{symbol}/live: how the
// active model does on outcomes it never saw (rolling windows, each figure beside what the model
// scored on its validation split and what the base rate scores), its alerts, its reliability,
// and the leaderboard and promotion decisions beside it.

import { api } from "./api.js";
import * as fmt from "./format.js";
import { renderDecisions, renderLeaderboard } from "./leaderboard.js";
import { drawReliability } from "./reliability.js";
import { el, emptyRow } from "./ui.js";

const WINDOWS = [
  ["last_1000", "last 1,000 outcomes"],
  ["last_10000", "last 10,000 outcomes"],
  ["last_hour", "last hour"],
  ["last_day", "last day"],
];

const ALERTS = {
  auc_floor: "AUC under the floor",
  below_last_move: "below the last-move rule",
  ece_bound: "ECE over the bound",
};

const NO_OUTCOMES = "no outcomes yet: each new tick is scored as it is stored, and counted once the " +
  "tick after it shows whether the price rose";

const finite = (v) => typeof v === "number" && Number.isFinite(v);

// A figure beside its references: `better` says which way a difference is good.
function compared(value, refs, better) {
  const td = el("td", fmt.metric(value), "num metric");
  td.dataset.value = finite(value) ? String(value) : "";
  for (const [name, label, ref] of refs) {
    const span = el("span", `${label} ${fmt.metric(ref)}`, "vs");
    span.dataset.ref = name;
    span.dataset.refValue = finite(ref) ? String(ref) : "";
    if (finite(value) && finite(ref)) {
      const d = value - ref;
      span.textContent += ` (${d >= 0 ? "+" : "−"}${Math.abs(d).toFixed(4)})`;
      if (Math.abs(d) >= 5e-5) span.classList.add(better * d > 0 ? "better" : "worse");
    }
    td.append(span);
  }
  return td;
}

function windowRow(key, label, m, validation) {
  const w = m || {};
  const tr = document.createElement("tr");
  tr.dataset.window = key;
  tr.dataset.count = String(w.count ?? 0);
  const auc = compared(w.auc, [["validation", "val", validation.auc], ["base", "base", 0.5]], +1);
  auc.dataset.metric = "auc";
  auc.title = finite(w.last_move_auc) ? `the last-move rule scores AUC ${fmt.metric(w.last_move_auc)}` : "";
  const brier = compared(w.brier, [["validation", "val", validation.brier], ["base", "base", w.base_brier]], -1);
  brier.dataset.metric = "brier";
  tr.append(
    el("th", label),
    el("td", finite(w.count) ? w.count.toLocaleString() : "0", "num"),
    auc,
    brier,
    el("td", fmt.metric(w.log_loss), "num"),
    el("td", fmt.metric(w.ece), "num"),
    el("td", finite(w.base_rate) ? `${(w.base_rate * 100).toFixed(1)}%` : "–", "num"),
  );
  return tr;
}

function alertBadges(alerts) {
  const raised = Object.entries(alerts || {}).filter(([, on]) => on === true);
  if (!raised.length) return [el("span", "no alerts", "chip alert-none")];
  return raised.map(([name]) => {
    const chip = el("span", ALERTS[name] || name.replaceAll("_", " "), "chip alert");
    chip.dataset.alert = name;
    return chip;
  });
}

// Why there is nothing to show, in words: the server's own reason where it gave one.
function explain(error, market) {
  if (!error.status) return `the service did not answer (${error.message}); trying again`;
  if (error.status === 404) return `no live evaluation for ${market}: ${error.message}`;
  if (error.status === 503) return `live evaluation is not available right now: ${error.message}`;
  return `could not read the live evaluation of ${market}: ${error.message}`;
}

export class LivePanel {
  constructor(root, onHistory) {
    this.root = root;
    this.onHistory = onHistory;
    this.select = root.querySelector("#live-market");
    this.select.addEventListener("change", () => this.refresh());
  }

  $(selector) {
    return this.root.querySelector(selector);
  }

  addMarket(name) {
    if ([...this.select.options].some((o) => o.value === name)) return;
    const option = document.createElement("option");
    option.value = option.textContent = name;
    this.select.append(option);
  }

  async refresh() {
    const market = this.select.value;
    if (!market) return;
    const [exchange, symbol] = market.split(/:(.*)/s);
    let live;
    try {
      live = await api(`/markets/${encodeURIComponent(exchange)}/${encodeURIComponent(symbol)}/live`);
    } catch (e) {
      if (this.select.value === market) this.show(null, explain(e, market), "error");
      return;
    }
    if (this.select.value === market) this.show(live); // not another market chosen meanwhile
  }

  // Draws one answer; `null` (with a reason) empties every part.
  show(live, reason, state) {
    const models = (live && Array.isArray(live.models)) ? live.models : [];
    const active = models.find((m) => m.role === "active") || models[0] || null;
    const windows = (active && active.windows) || {};
    const outcomes = WINDOWS.reduce((n, [k]) => Math.max(n, (windows[k] && windows[k].count) || 0), 0);
    let text = reason || "";
    if (live && !active) text = "no live data yet: no model is scored on this market (activate or train one)";
    else if (live && !outcomes) text = NO_OUTCOMES;
    this.root.dataset.state = state || (!active ? "empty" : outcomes ? "live" : "no-outcomes");
    this.$("#live-message").textContent = text;
    this.$("#live-scored").textContent = live && live.scored_through != null
      ? `scored through ${fmt.utcDateTime(live.scored_through)} UTC` : "";
    this.showActive(active);
    renderLeaderboard(this.$("#leaderboard tbody"), models, this.onHistory);
    renderDecisions(this.$("#decisions tbody"), live ? live.decisions : [],
      live ? "no promotion decisions yet: a challenger is tested once it has enough paired outcomes"
        : "–");
  }

  showActive(active) {
    const name = this.$("#live-model");
    name.textContent = active ? `${active.model_id}${active.arch ? ` (${active.arch})` : ""}` : "none";
    name.dataset.modelId = active ? active.model_id : "";
    const when = active && active.computed_at != null ? `, computed ${fmt.clock(active.computed_at)}` : "";
    this.$("#live-calibrator").textContent = active
      ? `calibrator v${active.calibrator_version ?? "–"}${when}` : "";
    this.$("#live-alerts").replaceChildren(...(active ? alertBadges(active.alerts) : []));
    const tbody = this.$("#live-windows tbody");
    if (!active) {
      tbody.replaceChildren(emptyRow(7, "no model is scored live on this market yet"));
    } else {
      const validation = active.validation || {};
      tbody.replaceChildren(...WINDOWS.map(([k, label]) => windowRow(k, label, active.windows?.[k], validation)));
    }
    drawReliability(this.$("#reliability svg"), active ? active.reliability : []);
  }
}
