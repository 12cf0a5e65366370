import { test } from "node:test";
import assert from "node:assert/strict";
import * as fmt from "../js/format.js";

test("missing values are a dash, never NaN or undefined", () => {
  for (const v of [undefined, null, NaN, "-", "", Infinity, "abc"]) {
    for (const f of [fmt.price, fmt.integer, fmt.money, fmt.percent, fmt.ratio, fmt.nsTime, fmt.signedMoney]) {
      assert.equal(f(v), "-", `${f.name}(${v})`);
    }
  }
  assert.equal(fmt.text(undefined), "-");
  assert.equal(fmt.text(null), "-");
  assert.equal(fmt.text("沪铜"), "沪铜");
});

test("tick decimals and prices", () => {
  assert.equal(fmt.tickDecimals(10), 0);
  assert.equal(fmt.tickDecimals(0.02), 2);
  assert.equal(fmt.tickDecimals(0.2), 1);
  assert.equal(fmt.tickDecimals(0.0001), 4);
  assert.equal(fmt.price(86040, 0), "86040");
  assert.equal(fmt.price("950.02", 2), "950.02");
  assert.equal(fmt.integer(1500010), "1,500,010");
  assert.equal(fmt.money(-1234.5), "-1,234.50");
  assert.equal(fmt.signedMoney(12), "+12.00");
});

test("change against the previous settlement", () => {
  assert.equal(fmt.percent(fmt.change(101, 100)), "+1.00%");
  assert.equal(fmt.percent(fmt.change(99, 100)), "-1.00%");
  assert.equal(fmt.percent(fmt.change(99, 0)), "-");
  assert.equal(fmt.ratio(0.1621), "16.21%");
});

test("nanosecond times show in China time", () => {
  // 2026-01-05 01:30:00 UTC = 09:30:00 China time
  const ns = Date.UTC(2026, 0, 5, 1, 30, 0) * 1e6;
  assert.equal(fmt.nsTime(ns), "09:30:00");
  assert.equal(fmt.nsTime(ns, true), "2026-01-05 09:30:00");
  assert.equal(fmt.nsBarLabel(ns, 86400e9), "2026-01-05");
  assert.equal(fmt.age(400), "0.4 s");
  assert.equal(fmt.age(30000), "30 s");
  assert.equal(fmt.age(600000), "10 min");
});
