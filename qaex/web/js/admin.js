// The admin page: contracts (list, create, suspend/resume), settlement with last prices prefilled,
// users by risk ratio, deposits and a summary of /metrics. The admin token lives in sessionStorage
// (this tab only). Quotes come live over DIFF (no login needed); the rest over the admin HTTP API.
import { DiffClient } from "./diff.js";
import * as fmt from "./format.js";
import { applyLabels, t, toggleLanguage } from "./i18n.js";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("qaex.admin") || "";
let instruments = {};
let client = null;
const touched = new Set(); // settlement inputs the admin edited

function toast(level, text) {
  const box = document.createElement("div");
  box.className = `toast ${level}`;
  box.textContent = text;
  $("toasts").append(box);
  setTimeout(() => box.remove(), 6000);
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  let data = text;
  try { data = JSON.parse(text); } catch (error) { /* /metrics is text */ }
  if (!response.ok) {
    toast("ERROR", `${response.status}: ${fmt.text(data?.error?.message || text)}`);
    throw new Error(String(response.status));
  }
  return data;
}

function row(tbody, key) {
  let tr = [...tbody.children].find((r) => r.dataset.key === key);
  if (!tr) {
    tr = document.createElement("tr");
    tr.dataset.key = key;
    tbody.append(tr);
  }
  return tr;
}

function fill(tr, values) {
  while (tr.children.length < values.length) tr.append(document.createElement("td"));
  values.forEach((v, i) => {
    const spec = typeof v === "object" && v !== null ? v : { text: v };
    if (tr.children[i].textContent !== fmt.text(spec.text)) tr.children[i].textContent = fmt.text(spec.text);
    tr.children[i].className = spec.cls || "";
  });
}

function renderContracts() {
  const quotes = client?.tree?.quotes || {};
  const body = $("contracts").tBodies[0];
  const settle = $("settle").tBodies[0];
  const symbols = Object.keys(instruments).filter((s) => !s.startsWith("KQ.")).sort();
  for (const r of [...body.children]) if (!instruments[r.dataset.key]) r.remove();
  for (const symbol of symbols) {
    const i = instruments[symbol];
    const q = quotes[symbol] || {};
    const d = fmt.tickDecimals(i.price_tick);
    const tr = row(body, symbol);
    fill(tr, [symbol, i.instrument_name, { text: fmt.price(i.price_tick, d), cls: "n" }, { text: fmt.integer(i.volume_multiple), cls: "n" },
      { text: fmt.price(i.pre_settlement, d), cls: "n" }, { text: fmt.price(q.last_price, d), cls: "n" }, { text: fmt.integer(q.open_interest), cls: "n" },
      { text: i.suspended ? t("suspended") : "", cls: i.suspended ? "down" : "" }, ""]);
    const cell = tr.lastChild;
    if (!cell.firstChild) {
      for (const action of ["suspend", "resume"]) {
        const b = document.createElement("button");
        b.className = `btn-small ${action}`;
        b.textContent = t(action);
        b.addEventListener("click", async () => {
          const answer = await api("POST", `/api/admin/instruments/${encodeURIComponent(symbol)}/${action}`);
          Object.assign(instruments, answer.instruments);
          toast("INFO", `${symbol}: ${t(action)} ${t("done")}`);
          renderContracts();
        });
        cell.append(b);
      }
    }
    cell.querySelector(".suspend").disabled = !!i.suspended;
    cell.querySelector(".resume").disabled = !i.suspended;
    const sr = row(settle, symbol);
    if (sr.children.length === 0) {
      sr.append(document.createElement("td"), document.createElement("td"), document.createElement("td"));
      const input = document.createElement("input");
      input.inputMode = "decimal";
      input.addEventListener("input", () => touched.add(symbol));
      sr.children[2].append(input);
    }
    sr.children[0].textContent = symbol;
    sr.children[1].textContent = fmt.price(q.last_price, d);
    sr.children[1].className = "n";
    const input = sr.querySelector("input");
    if (!touched.has(symbol)) input.value = fmt.has(q.last_price) ? fmt.price(q.last_price, d) : fmt.price(i.pre_settlement, d);
  }
}

async function loadInstruments() {
  instruments = (await api("GET", "/api/market/instruments")).instruments;
  const list = Object.keys(instruments).filter((s) => !s.startsWith("KQ.")).join(",");
  if (client && client.subscription !== list) client.subscribe(list);
  renderContracts();
}

async function loadUsers() {
  const users = Object.entries((await api("GET", "/api/admin/users")).users);
  users.sort((a, b) => (fmt.num(b[1].risk_ratio) || 0) - (fmt.num(a[1].risk_ratio) || 0) || a[0].localeCompare(b[0]));
  const body = $("users").tBodies[0];
  body.replaceChildren();
  for (const [id, a] of users.slice(0, 500)) {
    fill(row(body, id), [id, { text: fmt.money(a.balance), cls: "n" }, { text: fmt.money(a.available), cls: "n" }, { text: fmt.money(a.margin), cls: "n" }, { text: fmt.ratio(a.risk_ratio), cls: "n" }]);
  }
}

async function loadMetrics() {
  const text = await api("GET", "/metrics");
  const body = $("metrics").tBodies[0];
  body.replaceChildren();
  for (const line of String(text).split("\n")) {
    if (!line || line.startsWith("#") || line.includes("_bucket")) continue;
    const space = line.lastIndexOf(" ");
    const name = line.slice(0, space);
    const value = Number(line.slice(space + 1));
    fill(row(body, name), [name, { text: Number.isInteger(value) ? fmt.integer(value) : value.toPrecision(4), cls: "n" }]);
  }
}

async function refresh() {
  if (!token) return;
  try {
    const health = await (await fetch("/health")).json();
    $("trading-day").textContent = `${t("trading_day")} ${fmt.text(health.trading_day)}`;
    await loadInstruments();
    await Promise.all([loadUsers(), loadMetrics()]);
  } catch (error) {
    // the failing call said why in a toast
  }
}

function numberOrUnset(value) {
  return value === "" ? undefined : Number(value);
}

function wire() {
  $("lang-btn").addEventListener("click", () => { toggleLanguage(); renderContracts(); });
  $("token").value = token;
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("qaex.admin", token);
    refresh();
  });
  $("refresh-btn").addEventListener("click", refresh);
  $("settle-btn").addEventListener("click", async () => {
    const prices = {};
    for (const tr of $("settle").tBodies[0].children) {
      const v = Number(tr.querySelector("input").value);
      if (v > 0) prices[tr.dataset.key] = v;
    }
    const answer = await api("POST", "/api/admin/settle", { prices });
    toast("INFO", `${t("settlement")} ${t("done")}: ${fmt.text(answer.trading_day)}`);
    touched.clear();
    refresh();
  });
  $("create-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    const spec = {};
    for (const [key, value] of form.entries()) {
      const v = String(value).trim();
      if (v === "") continue;
      spec[key] = ["exchange_id", "instrument_id", "product_id", "instrument_name"].includes(key) ? v : numberOrUnset(v);
    }
    const answer = await api("POST", "/api/admin/instruments", spec);
    Object.assign(instruments, answer.instruments);
    toast("INFO", `${Object.keys(answer.instruments).join(",")} ${t("done")}`);
    loadInstruments();
  });
  $("deposit-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    await api("POST", "/api/admin/deposit", { user_id: $("dep-user").value.trim(), amount: Number($("dep-amount").value) });
    toast("INFO", `${t("admin_deposit")} ${t("done")}`);
    loadUsers();
  });
}

function statusTick() {
  const ageMs = client?.lastUpdate ? Date.now() - client.lastUpdate : NaN;
  $("conn-light").className = `light ${client?.connected ? (ageMs > 5000 ? "stale" : "on") : "off"}`;
  $("conn-text").textContent = client?.connected ? `${t("connected")} · ${t("last_update")} ${fmt.age(ageMs)} ${t("ago")}` : t("connecting");
}

async function main() {
  applyLabels();
  wire();
  const config = await (await fetch("/api/web/config")).json();
  let queued = false;
  client = new DiffClient(config.diff_url, {
    onUpdate: () => { if (!queued) { queued = true; requestAnimationFrame(() => { queued = false; renderContracts(); }); } },
    onStatus: statusTick,
  });
  client.start();
  setInterval(statusTick, 500);
  await refresh();
}

main().catch((error) => toast("ERROR", String(error)));
