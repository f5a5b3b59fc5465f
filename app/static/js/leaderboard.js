// The live leaderboard (the active model and its shadow challengers, scored on the same
// outcomes) and the promotion decisions taken between them.

import * as fmt from "./format.js";
import { el, emptyRow } from "./ui.js";

const count = (m) => (m && typeof m.count === "number" ? m.count.toLocaleString() : "–");

// One window's figures: outcomes, log loss, AUC, Brier.
function windowCells(m) {
  const w = m || {};
  return [
    el("td", count(w), "num"),
    el("td", fmt.metric(w.log_loss), "num"),
    el("td", fmt.metric(w.auc), "num"),
    el("td", fmt.metric(w.brier), "num"),
  ];
}

// `models` as GET /markets/{exchange}/{symbol}/live lists them (active first, then the shadows
// by their last 1,000 outcomes' log loss); `onHistory(id)` opens a model's history.
export function renderLeaderboard(tbody, models, onHistory) {
  const rows = (models || []).map((m) => {
    const tr = document.createElement("tr");
    tr.dataset.modelId = m.model_id;
    tr.dataset.role = m.role;
    if (m.role === "active") tr.classList.add("active");
    const windows = m.windows || {};
    const history = el("button", "History", "history");
    history.type = "button";
    history.title = `promotions and refusals of ${m.model_id}`;
    history.addEventListener("click", () => onHistory(m.model_id));
    const action = document.createElement("td");
    action.append(history);
    tr.append(
      el("td", m.model_id, "mono"),
      el("td", m.role, m.role === "active" ? "badge" : ""),
      el("td", m.arch ?? "–"),
      el("td", m.calibrator_version == null ? "–" : `v${m.calibrator_version}`),
      ...windowCells(windows.last_1000),
      ...windowCells(windows.last_10000),
      action,
    );
    return tr;
  });
  if (!rows.length) rows.push(emptyRow(13, "no model is scored live on this market yet"));
  tbody.replaceChildren(...rows);
}

function signed(v, digits) {
  if (typeof v !== "number" || !Number.isFinite(v)) return "–";
  return `${v > 0 ? "+" : v < 0 ? "−" : ""}${Math.abs(v).toFixed(digits)}`;
}

// Decisions, newest first: a challenger promoted over the active model, or refused, on a paired
// test of their log losses over the same outcomes (n pairs, the mean difference, its p-value).
export function renderDecisions(tbody, decisions, emptyText) {
  const rows = (decisions || []).map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.decision = d.decision;
    tr.dataset.challenger = d.challenger_id;
    tr.title = d.reason || "";
    tr.append(
      el("td", fmt.utcDateTime(d.at)),
      el("td", d.decision, `decision decision-${d.decision}`),
      el("td", d.challenger_id, "mono"),
      el("td", d.active_id, "mono"),
      el("td", typeof d.n === "number" ? d.n.toLocaleString() : "–", "num"),
      el("td", signed(d.mean_diff, 5), "num"),
      el("td", typeof d.p_value === "number" ? d.p_value.toPrecision(3) : "–", "num"),
      el("td", d.reason || ""),
    );
    return tr;
  });
  if (!rows.length) rows.push(emptyRow(8, emptyText));
  tbody.replaceChildren(...rows);
}
