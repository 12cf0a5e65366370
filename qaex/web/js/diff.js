// The DIFF client in the browser: peek loop, RFC 7386 merge, notifies, reconnect with backoff and
// re-login, and a fresh tree per connection, swapped in at its first complete snapshot (so an order
// deleted while we were away does not linger as a ghost).
import { applyData, notifiesOf } from "./merge.js";

export const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000];

export function backoffDelay(attempt) {
  return BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
}

// Is a connection's tree complete enough to replace the one on screen? After its first rtn_data, and,
// when a login was sent, once the trade tree says trade_more_data false (or the login was refused).
export function snapshotComplete(tree, userId, loginAnswered) {
  if (!userId) return true;
  if (loginAnswered === "refused") return true;
  return tree?.trade?.[userId]?.trade_more_data === false;
}

export class DiffClient {
  constructor(url, { onUpdate, onNotify, onStatus, WebSocketImpl } = {}) {
    this.url = url;
    this.onUpdate = onUpdate || (() => {});
    this.onNotify = onNotify || (() => {});
    this.onStatus = onStatus || (() => {});
    this.WebSocketImpl = WebSocketImpl || WebSocket;
    this.tree = {};          // what the page shows
    this.pending = null;     // the current connection's tree until it is complete
    this.ws = null;
    this.attempt = 0;
    this.login = null;       // {user_name, password}: sent again on every connection
    this.subscription = "";  // ins_list
    this.charts = new Map(); // chart_id -> set_chart message
    this.lastUpdate = 0;
    this.connected = false;
    this.stopped = false;
    this.loginState = null;  // null | "sent" | "ok" | "refused"
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    if (this.ws) this.ws.close(1000, "bye");
  }

  open() {
    let ws;
    try {
      ws = new this.WebSocketImpl(this.url);
    } catch (error) {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.pending = {};
    this.swapped = false;
    ws.onopen = () => {
      this.attempt = 0;
      this.connected = true;
      this.onStatus("open");
      if (this.subscription) this.sendRaw({ aid: "subscribe_quote", ins_list: this.subscription });
      for (const chart of this.charts.values()) this.sendRaw(chart);
      if (this.login) this.sendLogin();
      this.sendRaw({ aid: "peek_message" });
    };
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.connected = false;
      this.ws = null;
      this.onStatus("closed");
      if (!this.stopped) this.scheduleReconnect();
    };
    ws.onerror = () => {};
  }

  scheduleReconnect() {
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.onStatus("reconnecting", delay);
    setTimeout(() => { if (!this.stopped && !this.ws) this.open(); }, delay);
  }

  sendRaw(message) {
    if (this.ws && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  send(message) {
    return this.sendRaw(message);
  }

  sendLogin() {
    this.loginState = "sent";
    this.sendRaw({ aid: "req_login", bid: "qaex", user_name: this.login.user_name, password: this.login.password });
  }

  setLogin(userName, password) {
    this.login = userName ? { user_name: userName, password } : null;
    if (this.login) this.sendLogin();
  }

  subscribe(insList) {
    this.subscription = insList;
    this.sendRaw({ aid: "subscribe_quote", ins_list: insList });
  }

  setChart(message) {
    const full = { aid: "set_chart", ...message };
    if (full.ins_list) this.charts.set(full.chart_id, full);
    else this.charts.delete(full.chart_id);
    this.sendRaw(full);
  }

  receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch (error) {
      return;
    }
    if (message.aid !== "rtn_data") return;
    const data = message.data || [];
    for (const note of notifiesOf(data)) {
      if (note.code === 401) this.loginState = "ok";
      if (this.login && this.loginState === "sent" && [402, 403, 429, 492].includes(note.code)) this.loginState = "refused";
      this.onNotify(note);
    }
    this.pending = applyData(this.pending, data);
    delete this.pending.notify; // shown once as toasts; keeps the tree bounded
    if (!this.swapped && snapshotComplete(this.pending, this.login?.user_name, this.loginState)) this.swapped = true;
    if (this.swapped) this.tree = this.pending;
    this.lastUpdate = Date.now();
    this.sendRaw({ aid: "peek_message" });
    if (this.swapped) this.onUpdate(this.tree);
  }
}
