// The jobs list: status and a live progress bar per training job, and a cancel button.

import { api } from "./api.js";
import * as fmt from "./format.js";
import { actionButton, el } from "./ui.js";

// Share of the job done: finished epochs plus the running epoch's batches.
export function fraction(job) {
  if (job.status === "succeeded") return 1;
  const p = job.progress;
  if (!p || !p.num_epochs) return 0;
  const inEpoch = p.num_batches ? (p.batch || 0) / p.num_batches : 0;
  return Math.min(1, ((p.epoch || 1) - 1 + inEpoch) / p.num_epochs);
}

function detail(job) {
  if (job.error) return job.error;
  const p = job.progress;
  if (job.status === "succeeded" && job.result) {
    const r = job.result;
    const auc = r.metrics && r.metrics.test ? fmt.metric(r.metrics.test.auc) : "–";
    return `model ${r.model_id}, test AUC ${auc}${r.activated ? ", activated" : ""}`;
  }
  if (!p) return "";
  const parts = [p.phase];
  if (p.epoch) parts.push(`epoch ${p.epoch}/${p.num_epochs}`);
  if (p.loss != null) parts.push(`loss ${p.loss.toFixed(4)}`);
  if (p.val && p.val.auc != null) parts.push(`val AUC ${fmt.metric(p.val.auc)}`);
  return parts.join(", ");
}

export function renderJobs(tbody, jobs, onError, onChange) {
  const rows = jobs.map((job) => {
    const tr = document.createElement("tr");
    tr.dataset.jobId = job.id;
    tr.dataset.status = job.status;
    const spec = job.spec || {};
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = fraction(job);
    bar.title = `${Math.round(bar.value * 100)}%`;
    const barCell = document.createElement("td");
    barCell.append(bar);
    tr.append(
      el("td", job.id, "mono"),
      el("td", `${spec.exchange}:${spec.symbol}`),
      el("td", spec.config ? spec.config.arch : "–"),
      el("td", job.status, `status status-${job.status}`),
      barCell,
      el("td", detail(job), job.error ? "error" : ""),
    );
    const cell = document.createElement("td");
    if (job.status === "queued" || job.status === "running") {
      cell.append(actionButton("Cancel", "cancel", `cancelling ${job.id}`, () =>
        api(`/jobs/${encodeURIComponent(job.id)}`, { method: "DELETE" }), onError, onChange));
    }
    tr.append(cell);
    return tr;
  });
  tbody.replaceChildren(...rows);
}
