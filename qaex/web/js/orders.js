// Order entry without the DOM: the DIFF insert_order messages for what the form says, the SHFE/INE
// close split, price stepping inside the daily limits, volume bounds and pre-trade estimates.
import { num, tickDecimals } from "./format.js";

// TqSdk's mapping (DIFF.md insert_order): limit = LIMIT+GFD, FAK = LIMIT+IOC, FOK = IOC + ALL,
// market = ANY+IOC without limit_price.
export const ORDER_KINDS = {
  LIMIT: { price_type: "LIMIT", time_condition: "GFD", volume_condition: "ANY" },
  FAK: { price_type: "LIMIT", time_condition: "IOC", volume_condition: "ANY" },
  FOK: { price_type: "LIMIT", time_condition: "IOC", volume_condition: "ALL" },
  MARKET: { price_type: "ANY", time_condition: "IOC", volume_condition: "ANY" },
};

// Exchanges where CLOSE closes only yesterday's position and today's needs CLOSETODAY.
export const CLOSE_TODAY_EXCHANGES = new Set(["SHFE", "INE"]);

export function splitSymbol(symbol) {
  const dot = String(symbol).indexOf(".");
  return dot < 0 ? ["", String(symbol)] : [symbol.slice(0, dot), symbol.slice(dot + 1)];
}

// What may be closed now on one side: today's and yesterday's lots, less those frozen by orders.
// Closing a long position is a SELL, closing a short one a BUY.
export function closable(position, direction) {
  const side = direction === "SELL" ? "long" : "short";
  if (!position) return { today: 0, his: 0 };
  const today = num(position[`volume_${side}_today`]) - num(position[`volume_${side}_frozen_today`] ?? 0);
  const his = num(position[`volume_${side}_his`]) - num(position[`volume_${side}_frozen_his`] ?? 0);
  return { today: Math.max(0, today || 0), his: Math.max(0, his || 0) };
}

// The (offset, volume) legs of a close of `volume` lots. On SHFE/INE: yesterday's lots with CLOSE,
// then today's with CLOSETODAY (CLOSETODAY asked for: today's only). Elsewhere one CLOSE leg (the
// exchange closes today's and yesterday's alike). Throws when there is not that much to close.
export function closeLegs(exchangeId, offset, direction, volume, position) {
  const { today, his } = closable(position, direction);
  if (!CLOSE_TODAY_EXCHANGES.has(exchangeId)) {
    if (volume > today + his) throw new Error("not_enough_position");
    return [{ offset: "CLOSE", volume }];
  }
  if (offset === "CLOSETODAY") {
    if (volume > today) throw new Error("not_enough_position");
    return [{ offset: "CLOSETODAY", volume }];
  }
  if (volume > today + his) throw new Error("not_enough_position");
  const legs = [];
  const fromHis = Math.min(his, volume);
  if (fromHis > 0) legs.push({ offset: "CLOSE", volume: fromHis });
  if (volume - fromHis > 0) legs.push({ offset: "CLOSETODAY", volume: volume - fromHis });
  return legs;
}

let sequence = 0;
const runId = Math.floor(Math.random() * 0xffffffff).toString(16).padStart(8, "0");

// Client-chosen order ids, as TqSdk's ("PYSDK_insert_..."): unique per tab and run.
export function newOrderId() {
  sequence += 1;
  return `WEB_${runId}_${Date.now().toString(36)}_${sequence}`;
}

// The insert_order messages for one form submission (several when a close is split).
export function buildOrders({ userId, symbol, direction, offset, kind, volume, price, position, idFactory = newOrderId }) {
  const [exchangeId, instrumentId] = splitSymbol(symbol);
  const mapping = ORDER_KINDS[kind];
  if (!mapping) throw new Error("bad_kind");
  if (!(Number.isInteger(volume) && volume > 0)) throw new Error("bad_volume");
  const legs = offset === "OPEN" ? [{ offset: "OPEN", volume }] : closeLegs(exchangeId, offset, direction, volume, position);
  return legs.map((leg) => {
    const message = {
      aid: "insert_order",
      user_id: userId,
      order_id: idFactory(),
      exchange_id: exchangeId,
      instrument_id: instrumentId,
      direction,
      offset: leg.offset,
      volume: leg.volume,
      price_type: mapping.price_type,
      time_condition: mapping.time_condition,
      volume_condition: mapping.volume_condition,
    };
    if (mapping.price_type === "LIMIT") message.limit_price = price;
    return message;
  });
}

// The price snapped to the tick grid, moved by `steps` ticks, inside [lower, upper] (each rounded
// inwards to the grid). NaN limits are no bounds.
export function stepPrice(value, tick, steps = 0, lower = NaN, upper = NaN) {
  const t = num(tick);
  let v = num(value);
  if (!(t > 0) || Number.isNaN(v)) return NaN;
  let ticks = Math.round(v / t) + steps;
  const lo = num(lower);
  const hi = num(upper);
  if (!Number.isNaN(lo)) ticks = Math.max(ticks, Math.ceil(lo / t - 1e-9));
  if (!Number.isNaN(hi)) ticks = Math.min(ticks, Math.floor(hi / t + 1e-9));
  v = ticks * t;
  return Number(v.toFixed(tickDecimals(t)));
}

export function volumeBounds(quote, kind) {
  const market = kind === "MARKET";
  const min = num(quote?.[market ? "min_market_order_volume" : "min_limit_order_volume"]);
  const max = num(quote?.[market ? "max_market_order_volume" : "max_limit_order_volume"]);
  return { min: min > 0 ? min : 1, max: max > 0 ? max : 100000 };
}

export function clampVolume(volume, quote, kind) {
  const { min, max } = volumeBounds(quote, kind);
  const v = Math.round(num(volume));
  if (Number.isNaN(v)) return min;
  return Math.min(max, Math.max(min, v));
}

// Margin (opening only) and commission before sending, from the quote's per-lot figures (DIFF quote
// `margin` and `commission`, both at the previous settlement). Margin is a ratio of the price, so it is
// scaled to the order's price when there is one.
export function estimate(quote, offset, volume, orderPrice) {
  const lots = num(volume);
  if (!quote || !(lots > 0)) return { margin: NaN, commission: NaN };
  let perLot = num(quote.margin);
  const reference = num(orderPrice);
  const settlement = num(quote.pre_settlement);
  if (reference > 0 && settlement > 0) perLot = (perLot * reference) / settlement;
  return { margin: offset === "OPEN" ? perLot * lots : 0, commission: num(quote.commission) * lots };
}

// The user's resting volume per price on one contract: {buy: Map(price -> lots), sell: ...}.
export function restingByPrice(orders, symbol) {
  const [exchangeId, instrumentId] = splitSymbol(symbol);
  const buy = new Map();
  const sell = new Map();
  for (const order of Object.values(orders || {})) {
    if (!order || order.status !== "ALIVE" || order.exchange_id !== exchangeId || order.instrument_id !== instrumentId) continue;
    if (order.price_type !== "LIMIT") continue;
    const book = order.direction === "BUY" ? buy : sell;
    const key = num(order.limit_price);
    book.set(key, (book.get(key) || 0) + num(order.volume_left));
  }
  return { buy, sell };
}

// An order's state for the UI: ALIVE / FILLED / CANCELLED / REJECTED / PARTIAL (finished, partly filled).
export function orderState(order) {
  if (!order) return "UNKNOWN";
  if (order.status === "ALIVE") return order.exchange_order_id ? "ALIVE" : "PENDING";
  const left = num(order.volume_left);
  const total = num(order.volume_orign);
  if (left === 0) return "FILLED";
  if (!order.exchange_order_id) return "REJECTED";
  return left < total ? "PARTIAL" : "CANCELLED";
}
