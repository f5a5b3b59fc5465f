// The models table: test metrics, which model is active, and a button to activate another.

import { api } from "./api.js";
import * as fmt from "./format.js";

export function renderModels(tbody, models, onError, onChange) {
  const rows = models.map((m) => {
    const tr = document.createElement("tr");
    tr.dataset.modelId = m.id;
    if (m.active) tr.classList.add("active");
    const test = (m.metrics && m.metrics.test) || (m.metrics && m.metrics.val) || {};
    tr.append(
      fmt.el("td", m.id, "mono"),
      fmt.el("td", m.arch ?? "–"),
      fmt.el("td", m.seq_len ?? "–"),
      fmt.el("td", m.created_at ? new Date(m.created_at).toLocaleString() : "–"),
      fmt.el("td", fmt.metric(test.auc)),
      fmt.el("td", fmt.metric(test.brier)),
      fmt.el("td", m.active ? "active" : "", m.active ? "badge" : ""),
    );
    const cell = document.createElement("td");
    const button = fmt.el("button", "Activate", "activate");
    button.type = "button";
    button.disabled = m.active;
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api(`/models/${encodeURIComponent(m.id)}/activate`, { method: "POST" });
        onError("");
        onChange();
      } catch (e) {
        onError(`activating ${m.id} failed: ${e.message}`, e);
        button.disabled = false;
      }
    });
    cell.append(button);
    tr.append(cell);
    return tr;
  });
  tbody.replaceChildren(...rows);
}
