// Chart math without the canvas: bars from the DIFF tree, moving average, scales, the visible
// window, crosshair lookup and trade marks.
import { num } from "./format.js";

// The bars of klines[symbol][duration] between left_id and right_id (inclusive, when given), by id.
export function barsOf(series, leftId = -Infinity, rightId = Infinity) {
  const data = series?.data || {};
  const bars = [];
  for (const [key, bar] of Object.entries(data)) {
    const id = Number(key);
    if (!bar || id < leftId || id > rightId) continue;
    const b = { id, datetime: num(bar.datetime), open: num(bar.open), high: num(bar.high), low: num(bar.low), close: num(bar.close), volume: num(bar.volume) || 0 };
    if ([b.open, b.high, b.low, b.close].some(Number.isNaN)) continue;
    bars.push(b);
  }
  bars.sort((a, b) => a.id - b.id);
  return bars;
}

// Ticks of ticks[symbol] as points {id, datetime, price}.
export function ticksOf(series) {
  const points = [];
  for (const [key, tick] of Object.entries(series?.data || {})) {
    const price = num(tick?.last_price);
    if (!Number.isNaN(price)) points.push({ id: Number(key), datetime: num(tick.datetime), price, volume: num(tick.volume) || 0 });
  }
  points.sort((a, b) => a.id - b.id);
  return points;
}

// Simple moving average of `values` over `n`; NaN until n values are in.
export function movingAverage(values, n) {
  const out = new Array(values.length).fill(NaN);
  let sum = 0;
  for (let i = 0; i < values.length; i++) {
    sum += values[i];
    if (i >= n) sum -= values[i - n];
    if (i >= n - 1) out[i] = sum / n;
  }
  return out;
}

// The price range of bars (lows and highs) and extra lines, padded by `pad` of the span; a flat
// range is widened so that the scale never divides by zero.
export function priceRange(bars, extra = [], pad = 0.05) {
  let min = Infinity;
  let max = -Infinity;
  for (const b of bars) {
    if (b.low < min) min = b.low;
    if (b.high > max) max = b.high;
  }
  for (const v of extra) {
    if (Number.isFinite(v)) {
      if (v < min) min = v;
      if (v > max) max = v;
    }
  }
  if (!Number.isFinite(min)) return { min: 0, max: 1 };
  if (max - min < 1e-9) {
    const d = Math.abs(max) * 0.001 || 1;
    return { min: min - d, max: max + d };
  }
  const span = max - min;
  return { min: min - span * pad, max: max + span * pad };
}

// y pixel of a value in [min, max] drawn between top and bottom (top = max).
export function scaleY(value, min, max, top, bottom) {
  return bottom - ((value - min) / (max - min)) * (bottom - top);
}

export function valueAtY(y, min, max, top, bottom) {
  return min + ((bottom - y) / (bottom - top)) * (max - min);
}

// "Nice" axis ticks (1, 2, 5 x 10^k) covering [min, max] with about `count` lines.
export function niceTicks(min, max, count = 5) {
  if (!(max > min)) return [min];
  const raw = (max - min) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) || 10 * magnitude;
  const ticks = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) ticks.push(Number(v.toFixed(10)));
  return ticks;
}

// Which bars fit: `total` bars, `slot` pixels per bar in `width` pixels, scrolled `offset` bars back
// from the newest. Answers [first, last) indexes into the bar array.
export function visibleRange(total, width, slot, offset = 0) {
  const fit = Math.max(1, Math.floor(width / slot));
  const end = Math.max(0, Math.min(total, total - Math.max(0, Math.round(offset))));
  const start = Math.max(0, end - fit);
  return [start, end];
}

// Index (into the bar array) of the bar under x, given the visible range's first index.
export function indexAtX(x, first, last, slot) {
  if (last <= first) return -1;
  const i = first + Math.floor(x / slot);
  return Math.min(last - 1, Math.max(first, i));
}

// The user's trades on `symbol` as marks on the bars they fell in: [{index, direction, price, volume}].
export function tradeMarks(trades, bars, durationNs, symbol) {
  if (!bars.length) return [];
  const dot = symbol.indexOf(".");
  const exchangeId = symbol.slice(0, dot);
  const instrumentId = symbol.slice(dot + 1);
  const marks = [];
  for (const trade of Object.values(trades || {})) {
    if (!trade || trade.exchange_id !== exchangeId || trade.instrument_id !== instrumentId) continue;
    const t = num(trade.trade_date_time);
    // Binary search for the last bar starting at or before t (ns compared as floats: to the second).
    let lo = 0;
    let hi = bars.length - 1;
    if (t < bars[0].datetime || t >= bars[hi].datetime + durationNs) continue;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (bars[mid].datetime <= t) lo = mid;
      else hi = mid - 1;
    }
    marks.push({ index: lo, direction: trade.direction, price: num(trade.price), volume: num(trade.volume) });
  }
  return marks;
}

// The set_chart window to ask for when scrolling back `more` bars before `leftId`.
export function scrollBackRequest(leftId, rightId, more = 200, maxWidth = 10000) {
  const newLeft = Math.max(0, leftId - more);
  const width = Math.min(maxWidth, rightId - newLeft + 1 + 1000);
  return { left_kline_id: newLeft, view_width: width };
}
