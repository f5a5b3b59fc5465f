// The jobs list: status and a live progress bar per training job, and a cancel button.

import { api } from "./api.js";
import * as fmt from "./format.js";
import { actionButton, el, emptyRow } from "./ui.js";

// A job counts its epochs and then one step more: saving the model and comparing it with the
// active one (on a large market, as long as an epoch). The bar and the text count the same steps,
// so "comparing" never sits beside a bar that still waits for the last epoch, or a full one.
function steps(p) {
  return p.num_epochs + 1;
}

// Share of the job done: finished steps plus the running epoch's batches.
export function fraction(job) {
  if (job.status === "succeeded") return 1;
  const p = job.progress;
  if (!p || !p.num_epochs) return 0;
  if (p.phase !== "training") return p.num_epochs / steps(p); // the last step (training may stop early)
  const inEpoch = p.num_batches ? (p.batch || 0) / p.num_batches : 0;
  return Math.min(1, ((p.epoch || 1) - 1 + inEpoch) / steps(p));
}

export function detail(job) {
  if (job.error) return job.error;
  const p = job.progress;
  if (job.status === "succeeded" && job.result) {
    const r = job.result;
    const auc = r.metrics && r.metrics.test ? fmt.metric(r.metrics.test.auc) : "–";
    return `model ${r.model_id}, test AUC ${auc}${r.activated ? ", activated" : ""}`;
  }
  if (!p || !p.num_epochs) return job.status === "running" ? "loading the market's ticks" : "";
  const total = steps(p);
  const parts = p.phase === "training"
    ? [`step ${p.epoch || 1}/${total}: training, epoch ${p.epoch || 1}/${p.num_epochs}`]
    : [`step ${total}/${total}: ${p.phase}`, `trained ${p.epoch || 0}/${p.num_epochs} epochs`];
  if (p.phase === "training" && p.loss != null) parts.push(`loss ${p.loss.toFixed(4)}`);
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
    const percent = `${Math.round(bar.value * 100)}%`;
    bar.title = percent;
    const barCell = document.createElement("td");
    barCell.className = "progress";
    barCell.append(bar, el("span", percent, "percent"));
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
  if (!rows.length) rows.push(emptyRow(7, "no training jobs yet: start one with the form above"));
  tbody.replaceChildren(...rows);
}
