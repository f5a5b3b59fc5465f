// The dashboard: market cards with live streams, the models table, the jobs list and
// the training form, each refreshed from the public API.

import { api, apiKey, setApiKey } from "./api.js";
import { ModelHistory } from "./history.js";
import { renderJobs } from "./jobs.js";
import { LivePanel } from "./live.js";
import { MarketCard } from "./markets.js";
import { renderModels } from "./models.js";

const cards = new Map();
let authRequired = false;
let live = null; // the live panel and a model's history, built once the page has loaded
let modelHistory = null;

function message(id, text) {
  document.getElementById(id).textContent = text;
}

// A 401 means the key is missing or wrong: say where to enter it.
function reportError(id) {
  return (text, error) => {
    if (error && error.status === 401) {
      showKeyField();
      text += " (enter the API key in the training form)";
    }
    message(id, text);
  };
}

function showKeyField() {
  const field = document.getElementById("key-field");
  field.hidden = false;
  return field.querySelector("input");
}

// Polls `fn` every `ms()` milliseconds; errors are shown, never stop the loop.
function every(ms, fn) {
  const run = async () => {
    try {
      await fn();
    } catch (e) {
      console.warn(e);
    }
    setTimeout(run, ms());
  };
  run();
}

async function refreshStatus() {
  const chip = document.getElementById("service-status");
  try {
    const ready = await api("/ready");
    chip.dataset.state = "ready";
    chip.textContent = "ready";
    document.getElementById("active-model").textContent = `active model: ${ready.model_id}`;
  } catch (e) {
    chip.dataset.state = "not-ready";
    chip.textContent = e.status ? "not ready" : "unreachable";
    document.getElementById("active-model").textContent = e.message;
  }
}

// A card and a training choice per market, added as markets appear: GET /markets lists the
// configured ones and those that only have stored ticks (imported), which /info does not.
function addMarket(m) {
  const name = `${m.exchange}:${m.symbol}`;
  let card = cards.get(name);
  if (!card) {
    card = new MarketCard(m.exchange, m.symbol, document.getElementById("markets"));
    cards.set(name, card);
    card.connect();
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    document.getElementById("train-form").elements.market.append(option);
    live.addMarket(name);
  }
  return card;
}

async function refreshMarkets() {
  for (const status of await api("/markets")) addMarket(status).showStatus(status);
}

async function refreshCoverage() {
  await Promise.all([...cards.values()].map((card) => card.refreshCoverage()));
}

async function refreshLive() {
  await Promise.all([live.refresh(), modelHistory.refresh()]);
}

async function refreshModels() {
  try {
    const models = await api("/models");
    renderModels(document.querySelector("#models tbody"), models, reportError("models-error"), () => {
      refreshModels();
      refreshStatus();
    });
  } catch (e) {
    message("models-error", `could not list models: ${e.message}`);
  }
}

let jobsActive = false;

async function refreshJobs() {
  try {
    const jobs = await api("/jobs?limit=20");
    const wasActive = jobsActive;
    jobsActive = jobs.some((j) => j.status === "queued" || j.status === "running");
    renderJobs(document.querySelector("#jobs tbody"), jobs, reportError("jobs-error"), refreshJobs);
    message("jobs-error", "");
    if (wasActive && !jobsActive) {
      refreshModels(); // a job finished: a new model, perhaps a new active one
      refreshStatus();
    }
  } catch (e) {
    message("jobs-error", `could not list jobs: ${e.message}`);
  }
}

function setUpForm() {
  const form = document.getElementById("train-form");
  const select = form.elements.market;
  const keyInput = form.elements.api_key;
  keyInput.value = apiKey();
  if (authRequired) showKeyField();
  keyInput.addEventListener("change", () => setApiKey(keyInput.value.trim()));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (authRequired && !keyInput.value.trim()) {
      message("train-message", "this service needs an API key to start training: enter it above");
      keyInput.focus();
      return;
    }
    setApiKey(keyInput.value.trim());
    const [exchange, symbol] = select.value.split(/:(.*)/s);
    const f = form.elements;
    const body = {
      exchange, symbol, activate: f.activate.value,
      config: {
        arch: f.arch.value, num_epochs: Number(f.num_epochs.value),
        seq_len: Number(f.seq_len.value), hidden_size: Number(f.hidden_size.value),
      },
    };
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const job = await api("/train", { method: "POST", body });
      message("train-message", `job ${job.id} queued`);
      form.dataset.lastJob = job.id;
      refreshJobs();
    } catch (e) {
      const hint = e.status === 401 ? " (check the API key)" : "";
      message("train-message", `training was not started: ${e.message}${hint}`);
    } finally {
      button.disabled = false;
    }
  });
}

async function main() {
  const info = await api("/info");
  authRequired = info.auth_required;
  setUpForm();
  modelHistory = new ModelHistory(document.getElementById("model-history"));
  live = new LivePanel(document.getElementById("live-section"), (id) => modelHistory.open(id));
  for (const m of info.markets) addMarket(m); // at once, in their configured order
  every(() => 5000, refreshStatus);
  every(() => 5000, refreshMarkets);
  every(() => 10000, refreshModels);
  every(() => 5000, refreshLive);
  every(() => 15000, refreshCoverage); // a scan of each market's ticks: gaps change rarely
  every(() => (jobsActive ? 1000 : 5000), refreshJobs);
}

main().catch((e) => {
  const chip = document.getElementById("service-status");
  chip.dataset.state = "not-ready";
  chip.textContent = `dashboard failed to start: ${e.message}`;
});
