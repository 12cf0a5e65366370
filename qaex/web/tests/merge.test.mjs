import { test } from "node:test";
import assert from "node:assert/strict";
import { applyData, mergePatch, notifiesOf } from "../js/merge.js";

test("objects merge recursively, null deletes, scalars and arrays replace", () => {
  const tree = { a: { b: 1, c: 2 }, list: [1, 2], x: 1 };
  mergePatch(tree, { a: { c: null, d: 4 }, list: [3], x: "s" });
  assert.deepEqual(tree, { a: { b: 1, d: 4 }, list: [3], x: "s" });
});

test("RFC 7386 appendix examples", () => {
  const cases = [
    [{ a: "b" }, { a: "c" }, { a: "c" }],
    [{ a: "b" }, { b: "c" }, { a: "b", b: "c" }],
    [{ a: "b" }, { a: null }, {}],
    [{ a: "b", b: "c" }, { a: null }, { b: "c" }],
    [{ a: ["b"] }, { a: "c" }, { a: "c" }],
    [{ a: "c" }, { a: ["b"] }, { a: ["b"] }],
    [{ a: { b: "c" } }, { a: { b: "d", c: null } }, { a: { b: "d" } }],
    [{ a: [{ b: "c" }] }, { a: [1] }, { a: [1] }],
    [{ e: null }, { a: 1 }, { e: null, a: 1 }],
    [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
  ];
  for (const [target, patch, result] of cases) assert.deepEqual(mergePatch(structuredClone(target), patch), result);
});

test("null then object: a re-created order keeps no stale field", () => {
  const tree = { trade: { u: { orders: { o1: { status: "FINISHED", last_msg: "已撤单", volume_left: 1 } } } } };
  applyData(tree, [{ trade: { u: { orders: { o1: null } } } }, { trade: { u: { orders: { o1: { status: "ALIVE" } } } } }]);
  assert.deepEqual(tree.trade.u.orders.o1, { status: "ALIVE" });
});

test("an object over a scalar starts afresh; patches never alias the tree", () => {
  const tree = { k: 5 };
  const patch = { k: { a: 1 } };
  mergePatch(tree, patch);
  tree.k.b = 2;
  assert.deepEqual(patch, { k: { a: 1 } });
});

test("applyData applies in order, notifiesOf lists new notifies", () => {
  const data = [{ notify: { n1: { type: "MESSAGE", level: "INFO", code: 401, content: "登录成功" } } }, { quotes: { "SHFE.cu2601": { last_price: 1 } } }];
  const tree = applyData({}, data);
  assert.equal(tree.quotes["SHFE.cu2601"].last_price, 1);
  assert.deepEqual(notifiesOf(data).map((n) => [n.key, n.code]), [["n1", 401]]);
  assert.deepEqual(applyData(undefined, []), {});
});
