// One model's live history, from GET /models/{id}/live: the markets it is scored on (its role
// and calibrator there), its refitted calibrators, and every promotion or refusal it took part
// in, newest first.

import { api } from "./api.js";
import * as fmt from "./format.js";
import { renderDecisions } from "./leaderboard.js";
import { el } from "./ui.js";

function marketLine(m) {
  const w = (m.windows && m.windows.last_1000) || {};
  const n = typeof w.count === "number" ? w.count.toLocaleString() : "0";
  return el("li", `${m.exchange}:${m.symbol}: ${m.role}, calibrator v${m.calibrator_version ?? "–"}, ` +
    `${n} outcomes in the last 1,000, log loss ${fmt.metric(w.log_loss)}, AUC ${fmt.metric(w.auc)}`);
}

// A refitted calibrator (newest first): kept when it scored better on the outcomes held back.
function calibratorLine(c) {
  const fitted = c.fitted_at != null ? `, fitted ${fmt.utcDateTime(c.fitted_at)} UTC` : "";
  return el("li", `calibrator v${c.version ?? "–"}: ${c.kept ? "kept" : "not kept"}${fitted}`);
}

export class ModelHistory {
  constructor(root) {
    this.root = root;
    this.modelId = null;
    root.querySelector(".close").addEventListener("click", () => this.close());
  }

  $(selector) {
    return this.root.querySelector(selector);
  }

  open(modelId) {
    this.modelId = modelId;
    this.root.hidden = false;
    this.root.dataset.modelId = modelId;
    this.$(".history-model").textContent = modelId;
    this.$(".history-markets").replaceChildren();
    this.$(".history-message").textContent = "loading…";
    this.refresh();
    this.root.scrollIntoView({ block: "nearest" });
  }

  close() {
    this.modelId = null;
    this.root.hidden = true;
  }

  async refresh() {
    const id = this.modelId;
    if (!id) return;
    let live;
    try {
      live = await api(`/models/${encodeURIComponent(id)}/live`);
    } catch (e) {
      if (this.modelId !== id) return;
      this.$(".history-message").textContent = e.status === 404
        ? `no live history for ${id}: ${e.message}` : `could not read the history of ${id}: ${e.message}`;
      renderDecisions(this.$("tbody"), [], "–");
      return;
    }
    if (this.modelId !== id) return; // another model was opened meanwhile
    const markets = Array.isArray(live.markets) ? live.markets : [];
    const calibrators = Array.isArray(live.calibrators) ? live.calibrators : [];
    this.$(".history-markets").replaceChildren(...markets.map(marketLine), ...calibrators.map(calibratorLine));
    this.$(".history-message").textContent = markets.length ? "" : "no live figures on any market yet";
    renderDecisions(this.$("tbody"), live.history, "no promotions or refusals yet");
    this.root.dataset.loaded = id;
  }
}
