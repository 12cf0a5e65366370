// The trading terminal: wires the DIFF client to the DOM. Server strings are set with textContent
// only (never innerHTML). Everything live comes over DIFF; HTTP is used once for the contract list,
// the DIFF address and account opening.
import { CandleChart } from "./chart.js";
import { barsOf, scrollBackRequest, ticksOf, tradeMarks } from "./chartmath.js";
import { DiffClient } from "./diff.js";
import * as fmt from "./format.js";
import { applyLabels, t, toggleLanguage } from "./i18n.js";
import { buildOrders, clampVolume, estimate, orderState, restingByPrice, splitSymbol, stepPrice, volumeBounds } from "./orders.js";

const $ = (id) => document.getElementById(id);
const CHART_ID = "web_main";
const VIEW_WIDTH = 300;

const ui = {
  symbols: [],
  selected: "",
  direction: "BUY",
  offset: "OPEN",
  kind: "LIMIT",
  durationS: 60,
  chartLeft: null, // left_kline_id when scrolled back
  userId: "",
  password: "",
  lastPrices: new Map(),
  priceTouched: false,
};
let client = null;
let chart = null;
let renderQueued = false;

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = fmt.text(text);
  if (className) node.className = className;
  return node;
}

function toast(level, text) {
  const box = el("div", text, `toast ${level}`);
  $("toasts").append(box);
  while ($("toasts").children.length > 6) $("toasts").firstChild.remove();
  setTimeout(() => box.remove(), level === "ERROR" ? 9000 : 5000);
}

function trade() {
  return client?.tree?.trade?.[ui.userId] || null;
}

function quote(symbol = ui.selected) {
  return client?.tree?.quotes?.[symbol] || null;
}

function decimalsOf(q) {
  const d = fmt.num(q?.price_decs);
  return d >= 0 ? d : fmt.tickDecimals(q?.price_tick);
}

// -- rendering ---------------------------------------------------------------------------------------
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function render() {
  renderBoard();
  renderLadder();
  renderForm();
  renderChart();
  const tr = trade();
  renderOrders(tr);
  renderTrades(tr);
  renderPositions(tr);
  renderAccount(tr);
  renderTransfers(tr);
}

function syncRows(tbody, keys, build) {
  const existing = new Map([...tbody.children].map((row) => [row.dataset.key, row]));
  keys.forEach((key, index) => {
    let row = existing.get(key);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.key = key;
    }
    existing.delete(key);
    build(row, key);
    if (tbody.children[index] !== row) tbody.insertBefore(row, tbody.children[index] || null);
  });
  for (const row of existing.values()) row.remove();
}

function cells(row, values) {
  while (row.children.length < values.length) row.append(document.createElement("td"));
  values.forEach((v, i) => {
    const cell = row.children[i];
    const spec = typeof v === "object" && v !== null ? v : { text: v };
    const text = fmt.text(spec.text);
    if (cell.textContent !== text) cell.textContent = text;
    const cls = spec.cls || "";
    if (cell.className !== cls) cell.className = cls;
  });
}

function signClass(v) {
  const n = fmt.num(v);
  return n > 0 ? "n up" : n < 0 ? "n down" : "n";
}

function renderBoard() {
  const tbody = $("board").tBodies[0];
  syncRows(tbody, ui.symbols, (row, symbol) => {
    const q = quote(symbol) || {};
    const d = decimalsOf(q);
    const chg = fmt.change(q.last_price, q.pre_settlement);
    cells(row, [
      symbol, q.instrument_name, { text: fmt.price(q.last_price, d), cls: signClass(chg) }, { text: fmt.percent(chg), cls: signClass(chg) },
      { text: fmt.price(q.bid_price1, d), cls: "n" }, { text: fmt.integer(q.bid_volume1), cls: "n" },
      { text: fmt.price(q.ask_price1, d), cls: "n" }, { text: fmt.integer(q.ask_volume1), cls: "n" },
      { text: fmt.integer(q.volume), cls: "n" }, { text: fmt.integer(q.open_interest), cls: "n" },
      { text: fmt.price(q.upper_limit, d), cls: "n" }, { text: fmt.price(q.lower_limit, d), cls: "n" },
    ]);
    row.classList.toggle("sel", symbol === ui.selected);
    const last = fmt.num(q.last_price);
    const before = ui.lastPrices.get(symbol);
    if (before !== undefined && !Number.isNaN(last) && !Number.isNaN(before) && last !== before) {
      const cell = row.children[2];
      cell.classList.remove("flash-up", "flash-down");
      void cell.offsetWidth; // restart the animation
      cell.classList.add(last > before ? "flash-up" : "flash-down");
    }
    ui.lastPrices.set(symbol, last);
  });
}

function renderLadder() {
  const q = quote();
  $("ladder-symbol").textContent = ui.selected;
  const tbody = $("ladder").tBodies[0];
  const d = decimalsOf(q);
  const mine = restingByPrice(trade()?.orders, ui.selected);
  const keys = ["a5", "a4", "a3", "a2", "a1", "b1", "b2", "b3", "b4", "b5"];
  syncRows(tbody, keys, (row, key) => {
    const side = key[0] === "a" ? "ask" : "bid";
    const level = key[1];
    const p = fmt.num(q?.[`${side}_price${level}`]);
    const v = Number.isNaN(p) ? NaN : q?.[`${side}_volume${level}`]; // no price: an empty level
    const myBuy = mine.buy.get(p);
    const mySell = mine.sell.get(p);
    row.className = side + (key === "a1" ? " mid" : "");
    row.dataset.price = Number.isNaN(p) ? "" : String(p);
    cells(row, [
      { text: myBuy ? String(myBuy) : "", cls: "mine" },
      { text: side === "bid" && !Number.isNaN(p) ? fmt.integer(v) : "", cls: "vol bidvol" },
      { text: Number.isNaN(p) ? "" : fmt.price(p, d), cls: "price" },
      { text: side === "ask" && !Number.isNaN(p) ? fmt.integer(v) : "", cls: "vol askvol" },
      { text: mySell ? String(mySell) : "", cls: "mine" },
    ]);
  });
}

function renderForm() {
  const q = quote();
  $("form-symbol").textContent = ui.selected;
  for (const [id, value] of [["f-direction", ui.direction], ["f-offset", ui.offset], ["f-kind", ui.kind]]) {
    for (const b of $(id).children) b.classList.toggle("on", b.dataset.value === value);
  }
  $("f-send").className = `primary ${ui.direction === "BUY" ? "buy" : "sell"}`;
  $("f-price").disabled = ui.kind === "MARKET";
  if (!ui.priceTouched && q && ui.kind !== "MARKET") {
    const ref = fmt.has(q.last_price) ? q.last_price : q.pre_settlement;
    const p = stepPrice(ref, q.price_tick, 0, q.lower_limit, q.upper_limit);
    if (!Number.isNaN(p)) $("f-price").value = p.toFixed(decimalsOf(q));
  }
  const volume = Number($("f-volume").value);
  const est = estimate(q, ui.offset, volume, ui.kind === "MARKET" ? q?.last_price : Number($("f-price").value));
  $("f-margin").textContent = fmt.money(est.margin);
  $("f-commission").textContent = fmt.money(est.commission);
  const bounds = volumeBounds(q, ui.kind);
  const d = decimalsOf(q);
  $("f-limits").textContent = q
    ? `${t("lower_limit")} ${fmt.price(q.lower_limit, d)} · ${t("upper_limit")} ${fmt.price(q.upper_limit, d)} · ${t("lots")} ${bounds.min}-${bounds.max}`
    : "";
}

function chartDurationNs() {
  return ui.durationS * 1e9;
}

function renderChart() {
  const tree = client?.tree;
  const q = quote();
  $("chart-symbol").textContent = ui.selected;
  if (!tree || !ui.selected) return;
  const decimals = decimalsOf(q);
  const info = tree.charts?.[CHART_ID];
  if (ui.durationS === 0) {
    chart.set({ ticks: ticksOf(tree.ticks?.[ui.selected]), mode: "tick", decimals, durationNs: 0 });
    return;
  }
  const durationNs = chartDurationNs();
  const series = tree.klines?.[ui.selected]?.[String(durationNs)];
  const bars = barsOf(series, info?.left_id ?? -Infinity, info?.right_id ?? Infinity);
  const marks = tradeMarks(trade()?.trades, bars, durationNs, ui.selected);
  chart.set({ bars, marks, mode: "kline", decimals, durationNs });
}

function renderOrders(tr) {
  const orders = Object.values(tr?.orders || {}).sort((a, b) => fmt.num(b.insert_date_time) - fmt.num(a.insert_date_time) || String(b.order_id).localeCompare(String(a.order_id)));
  const tbody = $("orders").tBodies[0];
  syncRows(tbody, orders.map((o) => o.order_id), (row, id) => {
    const o = tr.orders[id];
    const state = orderState(o);
    const d = decimalsOf(quote(`${o.exchange_id}.${o.instrument_id}`));
    row.dataset.state = state;
    row.dataset.orderId = id;
    cells(row, [
      fmt.nsTime(o.insert_date_time), `${o.exchange_id}.${o.instrument_id}`,
      { text: t(`dir_${o.direction}`), cls: o.direction === "BUY" ? "up" : "down" }, t(`off_${o.offset}`),
      { text: o.price_type === "LIMIT" ? fmt.price(o.limit_price, d) : t("market_order"), cls: "n" },
      { text: fmt.integer(o.volume_orign), cls: "n" }, { text: fmt.integer(fmt.num(o.volume_orign) - fmt.num(o.volume_left)), cls: "n" },
      { text: t(`state_${state}`), cls: `state ${state}` }, { text: o.last_msg, cls: "msg" }, "",
    ]);
    const last = row.lastChild;
    if (o.status === "ALIVE" && !last.firstChild) {
      const b = el("button", t("cancel"), "btn-small cancel");
      b.addEventListener("click", () => cancelOrder(id));
      last.append(b);
    } else if (o.status !== "ALIVE" && last.firstChild) {
      last.replaceChildren();
    }
  });
}

function renderTrades(tr) {
  const trades = Object.values(tr?.trades || {}).sort((a, b) => fmt.num(b.trade_date_time) - fmt.num(a.trade_date_time));
  syncRows($("trades").tBodies[0], trades.map((x) => x.trade_id), (row, id) => {
    const x = tr.trades[id];
    const d = decimalsOf(quote(`${x.exchange_id}.${x.instrument_id}`));
    cells(row, [
      fmt.nsTime(x.trade_date_time), `${x.exchange_id}.${x.instrument_id}`,
      { text: t(`dir_${x.direction}`), cls: x.direction === "BUY" ? "up" : "down" }, t(`off_${x.offset}`),
      { text: fmt.price(x.price, d), cls: "n" }, { text: fmt.integer(x.volume), cls: "n" }, { text: fmt.money(x.commission), cls: "n" }, x.order_id,
    ]);
  });
}

function renderPositions(tr) {
  const rows = [];
  for (const [symbol, p] of Object.entries(tr?.positions || {})) {
    if (fmt.num(p.volume_long) > 0) rows.push(`${symbol}|long`);
    if (fmt.num(p.volume_short) > 0) rows.push(`${symbol}|short`);
  }
  rows.sort();
  syncRows($("positions").tBodies[0], rows, (row, key) => {
    const [symbol, side] = key.split("|");
    const p = tr.positions[symbol];
    const d = decimalsOf(quote(symbol));
    row.dataset.symbol = symbol;
    row.dataset.side = side;
    cells(row, [
      symbol, { text: t(side), cls: side === "long" ? "up" : "down" },
      { text: fmt.integer(p[`volume_${side}`]), cls: "n" }, { text: fmt.integer(p[`volume_${side}_today`]), cls: "n" }, { text: fmt.integer(p[`volume_${side}_his`]), cls: "n" },
      { text: fmt.price(p[`open_price_${side}`], d), cls: "n" }, { text: fmt.price(p.last_price, d), cls: "n" },
      { text: fmt.signedMoney(p[`float_profit_${side}`]), cls: `${signClass(p[`float_profit_${side}`])} pnl` },
      { text: fmt.money(p[`margin_${side}`]), cls: "n" }, "",
    ]);
    const last = row.lastChild;
    if (!last.firstChild) {
      const b = el("button", t("close_market"), "btn-small close-market");
      b.addEventListener("click", () => closeAtMarket(symbol, side));
      last.append(b);
    }
  });
}

const ACCOUNT_FIELDS = [
  ["balance", "money"], ["available", "money"], ["margin", "money"], ["risk_ratio", "ratio"],
  ["static_balance", "money"], ["float_profit", "signedMoney"], ["position_profit", "signedMoney"], ["close_profit", "signedMoney"],
  ["commission", "money"], ["frozen_margin", "money"], ["deposit", "money"], ["withdraw", "money"],
];

function renderAccount(tr) {
  const a = tr?.accounts?.CNY;
  const dl = $("account");
  if (dl.children.length !== ACCOUNT_FIELDS.length * 2) {
    dl.replaceChildren();
    for (const [key] of ACCOUNT_FIELDS) {
      dl.append(el("dt", t(key)));
      const dd = el("dd", "");
      dd.id = `acc-${key}`;
      dl.append(dd);
    }
  }
  for (const [key, how] of ACCOUNT_FIELDS) {
    const dd = $(`acc-${key}`);
    const text = a ? fmt[how](a[key]) : fmt.DASH;
    if (dd.textContent !== text) dd.textContent = text;
  }
  const who = $("who");
  who.textContent = a ? `${ui.userId} · ${t("balance")} ${fmt.money(a.balance)} · ${t("available")} ${fmt.money(a.available)} · ${t("risk_ratio")} ${fmt.ratio(a.risk_ratio)}` : "";
}

function renderTransfers(tr) {
  const list = Object.entries(tr?.transfers || {}).sort((a, b) => fmt.num(b[1].datetime) - fmt.num(a[1].datetime));
  syncRows($("transfers").tBodies[0], list.map(([k]) => k), (row, key) => {
    const x = tr.transfers[key];
    cells(row, [fmt.nsTime(x.datetime), { text: fmt.signedMoney(x.amount), cls: "n" }, x.error_msg || (x.error_id === 0 ? t("done") : "")]);
  });
}

// -- actions -----------------------------------------------------------------------------------------
function selectSymbol(symbol) {
  if (!symbol || symbol === ui.selected) return;
  ui.selected = symbol;
  ui.priceTouched = false;
  ui.chartLeft = null;
  setChart();
  scheduleRender();
}

function setChart() {
  if (!client || !ui.selected) return;
  const message = { chart_id: CHART_ID, ins_list: ui.selected, duration: chartDurationNs(), view_width: VIEW_WIDTH };
  if (ui.chartLeft !== null) Object.assign(message, ui.chartLeft);
  client.setChart(message);
}

function loadEarlier() {
  const info = client?.tree?.charts?.[CHART_ID];
  if (!info || ui.durationS === 0 || !(info.left_id > 0)) return;
  ui.chartLeft = scrollBackRequest(info.left_id, info.right_id);
  setChart();
}

function sendOrders(messages) {
  for (const m of messages) {
    if (!client.send(m)) {
      toast("ERROR", t("disconnected"));
      return;
    }
  }
}

function submitOrder(overrides = {}) {
  if (!ui.userId) return toast("ERROR", t("not_logged_in"));
  if (!ui.selected) return toast("ERROR", t("no_symbol"));
  const q = quote();
  const kind = overrides.kind || ui.kind;
  const direction = overrides.direction || ui.direction;
  const offset = overrides.offset || ui.offset;
  const volume = overrides.volume ?? Number($("f-volume").value);
  const { min, max } = volumeBounds(q, kind);
  if (!Number.isInteger(volume) || volume < min || volume > max) return toast("ERROR", `${t("bad_volume")} (${min}-${max})`);
  let price;
  if (kind !== "MARKET") {
    price = stepPrice(overrides.price ?? Number($("f-price").value), q?.price_tick, 0, q?.lower_limit, q?.upper_limit);
    if (Number.isNaN(price)) return toast("ERROR", t("bad_price"));
  }
  try {
    sendOrders(buildOrders({ userId: ui.userId, symbol: ui.selected, direction, offset, kind, volume, price, position: trade()?.positions?.[ui.selected] }));
  } catch (error) {
    toast("ERROR", t(error.message));
  }
}

function cancelOrder(orderId) {
  client.send({ aid: "cancel_order", user_id: ui.userId, order_id: orderId });
}

function cancelAll() {
  for (const o of Object.values(trade()?.orders || {})) if (o.status === "ALIVE") cancelOrder(o.order_id);
}

function closeAtMarket(symbol, side) {
  const p = trade()?.positions?.[symbol];
  const direction = side === "long" ? "SELL" : "BUY";
  const volume = fmt.num(p?.[`volume_${side}`]) - fmt.num(p?.[`volume_${side}_frozen`] ?? 0);
  if (!(volume > 0)) return toast("ERROR", t("not_enough_position"));
  const max = volumeBounds(quote(symbol), "MARKET").max;
  try {
    sendOrders(buildOrders({ userId: ui.userId, symbol, direction, offset: "CLOSE", kind: "MARKET", volume: Math.min(volume, max), position: p }));
  } catch (error) {
    toast("ERROR", t(error.message));
  }
}

function stepFormPrice(steps) {
  const q = quote();
  if (!q) return;
  const current = fmt.has($("f-price").value) ? Number($("f-price").value) : fmt.num(q.last_price);
  const p = stepPrice(current, q.price_tick, steps, q.lower_limit, q.upper_limit);
  if (!Number.isNaN(p)) $("f-price").value = p.toFixed(decimalsOf(q));
  ui.priceTouched = true;
  renderForm();
}

function wire() {
  $("lang-btn").addEventListener("click", () => { toggleLanguage(); render(); });
  $("board").tBodies[0].addEventListener("click", (e) => selectSymbol(e.target.closest("tr")?.dataset.key));
  for (const [id, key] of [["f-direction", "direction"], ["f-offset", "offset"], ["f-kind", "kind"]]) {
    $(id).addEventListener("click", (e) => {
      const value = e.target.closest("button")?.dataset.value;
      if (value) { ui[key] = value; renderForm(); }
    });
  }
  $("f-price-up").addEventListener("click", () => stepFormPrice(1));
  $("f-price-down").addEventListener("click", () => stepFormPrice(-1));
  $("f-price").addEventListener("input", () => { ui.priceTouched = true; renderForm(); });
  $("f-price").addEventListener("change", () => stepFormPrice(0));
  const stepVolume = (n) => { $("f-volume").value = String(clampVolume(Number($("f-volume").value) + n, quote(), ui.kind)); renderForm(); };
  $("f-volume-up").addEventListener("click", () => stepVolume(1));
  $("f-volume-down").addEventListener("click", () => stepVolume(-1));
  $("f-volume").addEventListener("input", () => renderForm());
  $("order-form").addEventListener("submit", (e) => { e.preventDefault(); submitOrder(); });
  $("ladder").tBodies[0].addEventListener("click", (e) => {
    const cell = e.target.closest("td");
    const row = e.target.closest("tr");
    if (!cell || !row || row.dataset.price === "") return;
    const p = Number(row.dataset.price);
    if (cell.classList.contains("price")) {
      const q = quote();
      $("f-price").value = p.toFixed(decimalsOf(q));
      ui.priceTouched = true;
      if (ui.kind === "MARKET") ui.kind = "LIMIT";
      renderForm();
    } else if ($("one-click").checked && cell.classList.contains("vol")) {
      submitOrder({ kind: "LIMIT", direction: cell.classList.contains("bidvol") ? "BUY" : "SELL", price: p });
    }
  });
  $("one-click").addEventListener("change", () => document.body.classList.toggle("one-click", $("one-click").checked));
  $("tabs").addEventListener("click", (e) => {
    const tab = e.target.closest("button")?.dataset.tab;
    if (!tab) return;
    for (const b of $("tabs").querySelectorAll("[data-tab]")) b.classList.toggle("on", b.dataset.tab === tab);
    for (const pane of document.querySelectorAll(".tab")) pane.hidden = pane.id !== `tab-${tab}`;
  });
  $("cancel-all").addEventListener("click", cancelAll);
  $("chart-duration").addEventListener("change", () => { ui.durationS = Number($("chart-duration").value); ui.chartLeft = null; setChart(); scheduleRender(); });
  $("chart-more").addEventListener("click", loadEarlier);
  $("chart-live").addEventListener("click", () => { ui.chartLeft = null; chart.offset = 0; setChart(); });
  const transfer = (sign) => {
    const amount = Number($("t-amount").value);
    if (!(amount > 0)) return toast("ERROR", t("amount"));
    client.send({ aid: "req_transfer", future_account: ui.userId, future_password: ui.password, bank_id: "qaex", bank_password: "", currency: "CNY", amount: sign * amount });
  };
  $("t-deposit").addEventListener("click", () => transfer(1));
  $("t-withdraw").addEventListener("click", () => transfer(-1));
  $("password-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const next = $("p-new").value;
    client.send({ aid: "change_password", old_password: $("p-old").value, new_password: next });
    ui.pendingPassword = next;
  });
  $("login-form").addEventListener("submit", (e) => { e.preventDefault(); login($("login-user").value.trim(), $("login-pass").value); });
  $("open-btn").addEventListener("click", openAccount);
  $("logout-btn").addEventListener("click", () => location.reload());
  chart = new CandleChart($("chart"), $("chart-label"), { onNeedMore: loadEarlier });
  $("chart-label").dataset.empty = t("no_data");
}

function login(userId, password) {
  $("login-error").textContent = "";
  ui.userId = userId;
  ui.password = password;
  client.setLogin(userId, password);
}

async function openAccount() {
  const userId = $("login-user").value.trim();
  const password = $("login-pass").value;
  $("login-error").textContent = "";
  const response = await fetch("/api/account/open", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ user_id: userId, password }) });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    $("login-error").textContent = fmt.text(body?.error?.message || response.statusText);
    return;
  }
  toast("INFO", t("account_opened"));
  login(userId, password);
}

function onNotify(note) {
  if (note.code === 401) {
    $("login").hidden = true;
    $("logout-btn").hidden = false;
  } else if ([402, 403, 492].includes(note.code) && !$("login").hidden) {
    $("login-error").textContent = fmt.text(note.content);
    client.setLogin("", "");
    ui.userId = "";
  }
  if (note.code === 493 && ui.pendingPassword) {
    ui.password = ui.pendingPassword;
    client.login.password = ui.password;
  }
  toast(note.level || "INFO", `[${fmt.text(note.code)}] ${fmt.text(note.content)}`);
}

function statusTick() {
  const light = $("conn-light");
  const text = $("conn-text");
  if (!client) return;
  const ageMs = client.lastUpdate ? Date.now() - client.lastUpdate : NaN;
  if (!client.connected) {
    light.className = "light off";
    text.textContent = t(client.lastUpdate ? "disconnected" : "connecting");
  } else {
    light.className = `light ${ageMs > 5000 ? "stale" : "on"}`;
    text.textContent = `${t("connected")} · ${t("last_update")} ${fmt.age(ageMs)} ${t("ago")}`;
  }
}

async function main() {
  applyLabels();
  wire();
  const [config, listing] = await Promise.all([
    fetch("/api/web/config").then((r) => r.json()),
    fetch("/api/market/instruments").then((r) => r.json()),
  ]);
  ui.symbols = Object.keys(listing.instruments || {}).filter((s) => !s.startsWith("KQ.")).sort();
  ui.selected = ui.symbols[0] || "";
  client = new DiffClient(config.diff_url, { onUpdate: scheduleRender, onNotify, onStatus: statusTick });
  client.subscription = ui.symbols.join(",");
  client.start();
  setChart();
  setInterval(statusTick, 250);
  scheduleRender();
  window.qaex = { client, ui }; // for debugging and the browser tests
}

main().catch((error) => toast("ERROR", String(error)));
