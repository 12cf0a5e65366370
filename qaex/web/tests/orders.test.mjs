import { test } from "node:test";
import assert from "node:assert/strict";
import { buildOrders, clampVolume, closeLegs, estimate, orderState, restingByPrice, stepPrice, volumeBounds } from "../js/orders.js";

const ids = () => { let n = 0; return () => `id${++n}`; };

test("order kinds map as TqSdk's", () => {
  const base = { userId: "u", symbol: "SHFE.cu2601", direction: "BUY", offset: "OPEN", volume: 2, price: 86000 };
  const [limit] = buildOrders({ ...base, kind: "LIMIT", idFactory: ids() });
  assert.deepEqual(limit, { aid: "insert_order", user_id: "u", order_id: "id1", exchange_id: "SHFE", instrument_id: "cu2601", direction: "BUY", offset: "OPEN", volume: 2, price_type: "LIMIT", time_condition: "GFD", volume_condition: "ANY", limit_price: 86000 });
  const [fak] = buildOrders({ ...base, kind: "FAK" });
  assert.equal(fak.time_condition, "IOC");
  assert.equal(fak.volume_condition, "ANY");
  const [fok] = buildOrders({ ...base, kind: "FOK" });
  assert.equal(fok.time_condition, "IOC");
  assert.equal(fok.volume_condition, "ALL");
  const [market] = buildOrders({ ...base, kind: "MARKET" });
  assert.equal(market.price_type, "ANY");
  assert.equal(market.time_condition, "IOC");
  assert.ok(!("limit_price" in market));
  assert.throws(() => buildOrders({ ...base, kind: "LIMIT", volume: 0 }), /bad_volume/);
  assert.notEqual(buildOrders({ ...base, kind: "LIMIT" })[0].order_id, buildOrders({ ...base, kind: "LIMIT" })[0].order_id);
});

const position = { volume_long_today: 3, volume_long_his: 2, volume_long_frozen_today: 0, volume_long_frozen_his: 0, volume_short_today: 1, volume_short_his: 0 };

test("SHFE/INE close split: yesterday's with CLOSE, today's with CLOSETODAY", () => {
  assert.deepEqual(closeLegs("SHFE", "CLOSE", "SELL", 4, position), [{ offset: "CLOSE", volume: 2 }, { offset: "CLOSETODAY", volume: 2 }]);
  assert.deepEqual(closeLegs("INE", "CLOSE", "SELL", 1, position), [{ offset: "CLOSE", volume: 1 }]);
  assert.deepEqual(closeLegs("SHFE", "CLOSE", "BUY", 1, position), [{ offset: "CLOSETODAY", volume: 1 }]);
  assert.deepEqual(closeLegs("SHFE", "CLOSETODAY", "SELL", 3, position), [{ offset: "CLOSETODAY", volume: 3 }]);
  assert.throws(() => closeLegs("SHFE", "CLOSETODAY", "SELL", 4, position), /not_enough_position/);
  assert.throws(() => closeLegs("SHFE", "CLOSE", "SELL", 6, position), /not_enough_position/);
  assert.deepEqual(closeLegs("DCE", "CLOSE", "SELL", 5, position), [{ offset: "CLOSE", volume: 5 }]);
  assert.deepEqual(closeLegs("CZCE", "CLOSETODAY", "SELL", 5, position), [{ offset: "CLOSE", volume: 5 }]);
  const frozen = { ...position, volume_long_frozen_his: 2 };
  assert.deepEqual(closeLegs("SHFE", "CLOSE", "SELL", 2, frozen), [{ offset: "CLOSETODAY", volume: 2 }]);
  const legs = buildOrders({ userId: "u", symbol: "SHFE.rb2601", direction: "SELL", offset: "CLOSE", kind: "MARKET", volume: 5, position });
  assert.deepEqual(legs.map((m) => [m.offset, m.volume]), [["CLOSE", 2], ["CLOSETODAY", 3]]);
});

test("prices step by the tick inside the daily limits", () => {
  assert.equal(stepPrice(86043, 10), 86040);
  assert.equal(stepPrice(86040, 10, 1), 86050);
  assert.equal(stepPrice(950.01, 0.02, 0), 950.02);
  assert.equal(stepPrice(950.02, 0.02, -1), 950);
  assert.equal(stepPrice(0.1 + 0.2, 0.1), 0.3);
  assert.equal(stepPrice(92030, 10, 5, 79980, 92020), 92020);
  assert.equal(stepPrice(100, 10, -100, 79985, 92020), 79990);
  assert.ok(Number.isNaN(stepPrice("x", 10)));
  assert.ok(Number.isNaN(stepPrice(1, 0)));
});

test("volume bounds and estimates", () => {
  const quote = { min_limit_order_volume: 1, max_limit_order_volume: 500, min_market_order_volume: 1, max_market_order_volume: 100, margin: 43000, commission: 21.5, pre_settlement: 86000 };
  assert.deepEqual(volumeBounds(quote, "LIMIT"), { min: 1, max: 500 });
  assert.deepEqual(volumeBounds(quote, "MARKET"), { min: 1, max: 100 });
  assert.equal(clampVolume(1000, quote, "MARKET"), 100);
  assert.equal(clampVolume(0, quote, "LIMIT"), 1);
  assert.deepEqual(estimate(quote, "OPEN", 2, 86000), { margin: 86000, commission: 43 });
  assert.equal(estimate(quote, "OPEN", 1, 172000).margin, 86000);
  assert.equal(estimate(quote, "CLOSE", 1, 86000).margin, 0);
  assert.ok(Number.isNaN(estimate(null, "OPEN", 1, 1).margin));
});

test("resting volume by price and order states", () => {
  const orders = {
    a: { status: "ALIVE", exchange_id: "SHFE", instrument_id: "cu2601", direction: "BUY", price_type: "LIMIT", limit_price: 86000, volume_left: 2 },
    b: { status: "ALIVE", exchange_id: "SHFE", instrument_id: "cu2601", direction: "BUY", price_type: "LIMIT", limit_price: 86000, volume_left: 1 },
    c: { status: "FINISHED", exchange_id: "SHFE", instrument_id: "cu2601", direction: "SELL", price_type: "LIMIT", limit_price: 86100, volume_left: 1 },
    d: { status: "ALIVE", exchange_id: "SHFE", instrument_id: "au2602", direction: "SELL", price_type: "LIMIT", limit_price: 950, volume_left: 1 },
  };
  const mine = restingByPrice(orders, "SHFE.cu2601");
  assert.equal(mine.buy.get(86000), 3);
  assert.equal(mine.sell.size, 0);
  assert.equal(orderState({ status: "ALIVE", exchange_order_id: "x" }), "ALIVE");
  assert.equal(orderState({ status: "FINISHED", exchange_order_id: "x", volume_left: 0, volume_orign: 1 }), "FILLED");
  assert.equal(orderState({ status: "FINISHED", exchange_order_id: "", volume_left: 1, volume_orign: 1 }), "REJECTED");
  assert.equal(orderState({ status: "FINISHED", exchange_order_id: "x", volume_left: 1, volume_orign: 1 }), "CANCELLED");
  assert.equal(orderState({ status: "FINISHED", exchange_order_id: "x", volume_left: 1, volume_orign: 3 }), "PARTIAL");
});
