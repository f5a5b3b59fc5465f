// Numbers and times as the dashboard shows them. Times are UTC everywhere on the page (and
// labelled so): the exchanges' clock, and the same for every reader of a shared screen.

export function price(v) {
  return v == null ? "–" : v.toLocaleString(undefined, { maximumFractionDigits: 2 });
}

export function probability(v) {
  return v == null ? "–" : v.toFixed(3);
}

export function metric(v) {
  return typeof v === "number" && Number.isFinite(v) ? v.toFixed(4) : "–";
}

function iso(date) {
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

// "2024-05-01 12:34:56" (UTC) for unix seconds.
export function utcDateTime(unixSeconds) {
  const s = unixSeconds == null ? null : iso(new Date(unixSeconds * 1000));
  return s ? `${s.slice(0, 10)} ${s.slice(11, 19)}` : "–";
}

// "12:34:56 UTC" for unix seconds.
export function clock(unixSeconds) {
  const s = unixSeconds == null ? null : iso(new Date(unixSeconds * 1000));
  return s ? `${s.slice(11, 19)} UTC` : "–";
}

// The time axis' labels (UTC), 24-hour like the rest of the page: seconds when the ticks are
// closer than a minute, and the date under the first label and wherever the day changes.
export function timeAxis(splits) {
  const step = splits.length > 1 ? splits[1] - splits[0] : 60;
  let day = null;
  return splits.map((t) => {
    const s = iso(new Date(t * 1000));
    if (!s) return "";
    const clockText = s.slice(11, step < 60 ? 19 : 16);
    const date = s.slice(0, 10);
    const label = date !== day ? `${clockText}\n${date}` : clockText;
    day = date;
    return label;
  });
}

// "2024-05-01 12:34 UTC" for an ISO 8601 timestamp.
export function created(text) {
  const s = text ? iso(new Date(text)) : null;
  return s ? `${s.slice(0, 10)} ${s.slice(11, 16)} UTC` : "–";
}

export function duration(seconds) {
  if (seconds == null) return "–";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(1)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}
