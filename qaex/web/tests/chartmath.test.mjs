import { test } from "node:test";
import assert from "node:assert/strict";
import { barsOf, indexAtX, movingAverage, niceTicks, priceRange, scaleY, scrollBackRequest, ticksOf, tradeMarks, valueAtY, visibleRange } from "../js/chartmath.js";
import { backoffDelay, DiffClient, snapshotComplete } from "../js/diff.js";

const bar = (datetime, o, h, l, c, volume = 1) => ({ datetime, open: o, high: h, low: l, close: c, volume });

test("bars come sorted by id, inside the chart window, incomplete ones skipped", () => {
  const series = { last_id: 12, data: { 10: bar(10e9, 1, 2, 0.5, 1.5), 9: bar(5e9, 1, 1, 1, 1), 12: bar(20e9, 2, 3, 1, 2), 11: { datetime: 15e9, open: "-" } } };
  assert.deepEqual(barsOf(series).map((b) => b.id), [9, 10, 12]);
  assert.deepEqual(barsOf(series, 10, 11).map((b) => b.id), [10]);
  assert.deepEqual(barsOf(undefined), []);
  assert.deepEqual(ticksOf({ data: { 2: { last_price: 5 }, 1: { last_price: 4 }, 3: { last_price: "-" } } }).map((p) => p.price), [4, 5]);
});

test("moving average", () => {
  const ma = movingAverage([1, 2, 3, 4, 5], 3);
  assert.ok(Number.isNaN(ma[0]) && Number.isNaN(ma[1]));
  assert.deepEqual(ma.slice(2), [2, 3, 4]);
});

test("scales, ranges and ticks", () => {
  assert.deepEqual(priceRange([bar(0, 10, 20, 10, 15)], [], 0), { min: 10, max: 20 });
  const flat = priceRange([bar(0, 5, 5, 5, 5)]);
  assert.ok(flat.max > flat.min);
  assert.deepEqual(priceRange([]), { min: 0, max: 1 });
  assert.equal(scaleY(20, 10, 20, 0, 100), 0);
  assert.equal(scaleY(10, 10, 20, 0, 100), 100);
  assert.equal(valueAtY(50, 10, 20, 0, 100), 15);
  assert.deepEqual(niceTicks(0, 10, 5), [0, 2, 4, 6, 8, 10]);
  assert.deepEqual(niceTicks(86012, 86088, 4), [86020, 86040, 86060, 86080]);
});

test("visible window and crosshair index", () => {
  assert.deepEqual(visibleRange(100, 80, 8, 0), [90, 100]);
  assert.deepEqual(visibleRange(100, 80, 8, 30), [60, 70]);
  assert.deepEqual(visibleRange(5, 80, 8, 0), [0, 5]);
  assert.equal(indexAtX(0, 90, 100, 8), 90);
  assert.equal(indexAtX(79, 90, 100, 8), 99);
  assert.equal(indexAtX(1000, 90, 100, 8), 99);
  assert.equal(indexAtX(5, 0, 0, 8), -1);
});

test("trade marks land on the bar they fell in", () => {
  const bars = [bar(0, 1, 1, 1, 1), bar(60e9, 1, 1, 1, 1), bar(120e9, 1, 1, 1, 1)].map((b, i) => ({ ...b, id: i }));
  const trades = {
    t1: { exchange_id: "SHFE", instrument_id: "cu2601", direction: "BUY", price: 1, volume: 1, trade_date_time: 61e9 },
    t2: { exchange_id: "SHFE", instrument_id: "cu2601", direction: "SELL", price: 1, volume: 1, trade_date_time: 179e9 },
    t3: { exchange_id: "SHFE", instrument_id: "cu2601", direction: "SELL", price: 1, volume: 1, trade_date_time: 181e9 },
    t4: { exchange_id: "SHFE", instrument_id: "au2602", direction: "SELL", price: 1, volume: 1, trade_date_time: 61e9 },
  };
  assert.deepEqual(tradeMarks(trades, bars, 60e9, "SHFE.cu2601").map((m) => [m.index, m.direction]), [[1, "BUY"], [2, "SELL"]]);
  assert.deepEqual(tradeMarks(trades, [], 60e9, "SHFE.cu2601"), []);
});

test("scrolling back asks for earlier bars with a fixed left edge", () => {
  assert.deepEqual(scrollBackRequest(500, 799, 200), { left_kline_id: 300, view_width: 1500 });
  assert.equal(scrollBackRequest(50, 349, 200).left_kline_id, 0);
  assert.equal(scrollBackRequest(9000, 20000, 200).view_width, 10000);
});

test("DIFF client: backoff, fresh tree per connection swapped in when complete", () => {
  assert.deepEqual([0, 1, 2, 10].map(backoffDelay), [250, 500, 1000, 8000]);
  assert.equal(snapshotComplete({}, "", null), true);
  assert.equal(snapshotComplete({ trade: { u: { trade_more_data: true } } }, "u", "sent"), false);
  assert.equal(snapshotComplete({ trade: { u: { trade_more_data: false } } }, "u", "sent"), true);
  assert.equal(snapshotComplete({}, "u", "refused"), true);

  const sockets = [];
  class FakeSocket {
    constructor(url) { this.url = url; this.sent = []; this.readyState = 1; sockets.push(this); }
    send(text) { this.sent.push(JSON.parse(text)); }
    close() {}
  }
  const updates = [];
  const client = new DiffClient("ws://x/ws/diff", { WebSocketImpl: FakeSocket, onUpdate: (tree) => updates.push(tree) });
  client.login = { user_name: "u", password: "p" };
  client.subscription = "SHFE.cu2601";
  client.open();
  const first = sockets[0];
  first.onopen();
  assert.deepEqual(first.sent.map((m) => m.aid), ["subscribe_quote", "req_login", "peek_message"]);
  first.onmessage({ data: JSON.stringify({ aid: "rtn_data", data: [{ trade: { u: { orders: { ghost: { status: "ALIVE" } }, trade_more_data: false } } }] }) });
  assert.ok(client.tree.trade.u.orders.ghost);
  assert.equal(first.sent.at(-1).aid, "peek_message");
  // A new connection: the old tree stays on screen until the new one is complete, then is replaced.
  client.ws = null;
  client.open();
  const second = sockets[1];
  second.onopen();
  second.onmessage({ data: JSON.stringify({ aid: "rtn_data", data: [{ quotes: { "SHFE.cu2601": { last_price: 1 } } }, { trade: { u: { trade_more_data: true } } }] }) });
  assert.ok(client.tree.trade.u.orders.ghost, "old tree kept while the new one is incomplete");
  second.onmessage({ data: JSON.stringify({ aid: "rtn_data", data: [{ trade: { u: { orders: { real: { status: "ALIVE" } }, trade_more_data: false } } }] }) });
  assert.deepEqual(Object.keys(client.tree.trade.u.orders), ["real"]);
  assert.equal(client.tree.quotes["SHFE.cu2601"].last_price, 1);
  assert.equal(updates.length, 2);
});
