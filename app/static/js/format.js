// Numbers and times as the dashboard shows them.

export function price(v) {
  return v == null ? "–" : v.toLocaleString(undefined, { maximumFractionDigits: 2 });
}

export function probability(v) {
  return v == null ? "–" : v.toFixed(3);
}

export function metric(v) {
  return typeof v === "number" && Number.isFinite(v) ? v.toFixed(4) : "–";
}

export function clock(unixSeconds) {
  return unixSeconds == null ? "–" : new Date(unixSeconds * 1000).toLocaleTimeString();
}

export function duration(seconds) {
  if (seconds == null) return "–";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(1)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}
