// Display formatting. Every function answers a string and never "NaN" or "undefined": a missing
// value (null, undefined, NaN, DIFF's "-" for no price) shows as "-".

export const DASH = "-";

export function num(value) {
  if (typeof value === "number") return Number.isFinite(value) ? value : NaN;
  if (typeof value === "string" && value.trim() !== "" && value !== "-") {
    const parsed = Number(value);
    return Number.isFinite(parsed) ? parsed : NaN;
  }
  return NaN;
}

export function has(value) {
  return !Number.isNaN(num(value));
}

// Decimals a price tick needs: 0.02 -> 2, 0.5 -> 1, 10 -> 0, 0.0001 -> 4.
export function tickDecimals(tick) {
  const t = num(tick);
  if (!(t > 0)) return 2;
  for (let d = 0; d <= 8; d++) {
    if (Math.abs(Math.round(t * 10 ** d) - t * 10 ** d) < 1e-6) return d;
  }
  return 8;
}

export function price(value, decimals = 2) {
  const v = num(value);
  return Number.isNaN(v) ? DASH : v.toFixed(decimals);
}

export function integer(value) {
  const v = num(value);
  return Number.isNaN(v) ? DASH : Math.round(v).toLocaleString("en-US");
}

export function money(value) {
  const v = num(value);
  if (Number.isNaN(v)) return DASH;
  return v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

export function signedMoney(value) {
  const v = num(value);
  if (Number.isNaN(v)) return DASH;
  return (v > 0 ? "+" : "") + money(v);
}

export function percent(value, decimals = 2) {
  const v = num(value);
  if (Number.isNaN(v)) return DASH;
  return (v > 0 ? "+" : "") + (v * 100).toFixed(decimals) + "%";
}

// Change against the previous settlement, as a fraction (0.0123 = +1.23%).
export function change(last, preSettlement) {
  const l = num(last);
  const p = num(preSettlement);
  if (Number.isNaN(l) || !(p > 0)) return NaN;
  return (l - p) / p;
}

export function ratio(value) {
  const v = num(value);
  return Number.isNaN(v) ? DASH : (v * 100).toFixed(2) + "%";
}

function pad(n, width = 2) {
  return String(n).padStart(width, "0");
}

// Epoch nanoseconds (display only: JSON.parse rounds them to ~256 ns) in China time (UTC+8), which
// is the exchanges' time whatever the browser's zone.
export function nsTime(ns, withDate = false) {
  const v = num(ns);
  if (Number.isNaN(v) || v <= 0) return DASH;
  const d = new Date(Math.floor(v / 1e6) + 8 * 3600 * 1000);
  const time = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  if (!withDate) return time;
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${time}`;
}

export function nsBarLabel(ns, durationNs) {
  const v = num(ns);
  if (Number.isNaN(v) || v <= 0) return DASH;
  const d = new Date(Math.floor(v / 1e6) + 8 * 3600 * 1000);
  if (num(durationNs) >= 86400e9) return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  return `${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
}

// Seconds since an event, for the connection light: "0.4 s", "12 s", "3 min".
export function age(ms) {
  const v = num(ms);
  if (Number.isNaN(v) || v < 0) return DASH;
  if (v < 10000) return (v / 1000).toFixed(1) + " s";
  if (v < 120000) return Math.round(v / 1000) + " s";
  return Math.round(v / 60000) + " min";
}

// "a" -> "a"; never "undefined" or "null" for text from the server.
export function text(value) {
  if (value === null || value === undefined) return DASH;
  if (typeof value === "number" && !Number.isFinite(value)) return DASH;
  return String(value);
}
