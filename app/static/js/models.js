// The models table: test metrics, which model is active, and a button to activate another.

import { api } from "./api.js";
import * as fmt from "./format.js";
import { actionButton, el, emptyRow } from "./ui.js";

export function renderModels(tbody, models, onError, onChange) {
  const rows = models.map((m) => {
    const tr = document.createElement("tr");
    tr.dataset.modelId = m.id;
    if (m.active) tr.classList.add("active");
    const test = (m.metrics && m.metrics.test) || (m.metrics && m.metrics.val) || {};
    tr.append(
      el("td", m.id, "mono"),
      el("td", m.arch ?? "–"),
      el("td", m.seq_len ?? "–"),
      el("td", fmt.created(m.created_at)),
      el("td", fmt.metric(test.auc)),
      el("td", fmt.metric(test.brier)),
      el("td", m.active ? "active" : "", m.active ? "badge" : ""),
    );
    const cell = document.createElement("td");
    const button = actionButton("Activate", "activate", `activating ${m.id}`, () =>
      api(`/models/${encodeURIComponent(m.id)}/activate`, { method: "POST" }), onError, onChange);
    button.disabled = m.active;
    cell.append(button);
    tr.append(cell);
    return tr;
  });
  if (!rows.length) rows.push(emptyRow(8, "no models yet: train one with the form below"));
  tbody.replaceChildren(...rows);
}
