// The canvas K-line / tick chart: candles + volume, a moving average, a crosshair with OHLC, the
// user's trades marked, drag or wheel to scroll back (asks for more history at the left edge).
import { indexAtX, movingAverage, niceTicks, priceRange, scaleY, visibleRange } from "./chartmath.js";
import { nsBarLabel, price as fmtPrice, integer } from "./format.js";

const UP = "#e0464e";   // Chinese convention: red up
const DOWN = "#1aa260"; // green down
const SLOT = 8;
const AXIS = 64;

export class CandleChart {
  constructor(canvas, label, { onNeedMore } = {}) {
    this.canvas = canvas;
    this.label = label;
    this.onNeedMore = onNeedMore || (() => {});
    this.bars = [];
    this.ticks = [];
    this.marks = [];
    this.mode = "kline";
    this.decimals = 2;
    this.durationNs = 60e9;
    this.offset = 0;
    this.mouse = null;
    this.maPeriod = 10;
    canvas.addEventListener("mousemove", (e) => { this.mouse = this.point(e); this.draw(); });
    canvas.addEventListener("mouseleave", () => { this.mouse = null; this.draw(); });
    canvas.addEventListener("wheel", (e) => { e.preventDefault(); this.scroll(Math.sign(e.deltaY) * 10); }, { passive: false });
    let dragX = null;
    canvas.addEventListener("mousedown", (e) => { dragX = e.clientX; });
    window.addEventListener("mouseup", () => { dragX = null; });
    window.addEventListener("mousemove", (e) => {
      if (dragX === null) return;
      const moved = Math.round((e.clientX - dragX) / SLOT);
      if (moved !== 0) { dragX = e.clientX; this.scroll(moved); }
    });
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  point(e) {
    const r = this.canvas.getBoundingClientRect();
    return { x: e.clientX - r.left, y: e.clientY - r.top };
  }

  scroll(bars) {
    const total = this.mode === "tick" ? this.ticks.length : this.bars.length;
    this.offset = Math.max(0, Math.min(Math.max(0, total - 10), this.offset + bars));
    const width = this.canvas.clientWidth - AXIS;
    const [first] = visibleRange(total, width, SLOT, this.offset);
    if (first === 0 && bars > 0) this.onNeedMore();
    this.draw();
  }

  set({ bars, ticks, marks, mode, decimals, durationNs }) {
    this.bars = bars || [];
    this.ticks = ticks || [];
    this.marks = marks || [];
    if (mode !== this.mode || durationNs !== this.durationNs) this.offset = 0;
    this.mode = mode;
    this.decimals = decimals;
    this.durationNs = durationNs;
    // offset counts bars back from the newest: history prepended on the left keeps the view.
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (w === 0 || h === 0) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#10141c";
    ctx.fillRect(0, 0, w, h);
    ctx.font = "11px sans-serif";
    const plotW = w - AXIS;
    const priceTop = 8;
    const priceBottom = Math.round(h * 0.74);
    const volTop = priceBottom + 10;
    const volBottom = h - 16;
    if (this.mode === "tick") this.drawTicks(ctx, plotW, priceTop, priceBottom, volBottom);
    else this.drawBars(ctx, plotW, priceTop, priceBottom, volTop, volBottom);
  }

  axis(ctx, min, max, top, bottom, plotW) {
    ctx.fillStyle = "#7f8a9c";
    ctx.strokeStyle = "#1f2633";
    ctx.lineWidth = 1;
    for (const v of niceTicks(min, max, 5)) {
      const y = Math.round(scaleY(v, min, max, top, bottom)) + 0.5;
      if (y < top || y > bottom) continue;
      ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(plotW, y); ctx.stroke();
      ctx.fillText(fmtPrice(v, this.decimals), plotW + 4, y + 4);
    }
  }

  drawBars(ctx, plotW, top, bottom, volTop, volBottom) {
    const bars = this.bars;
    if (!bars.length) {
      ctx.fillStyle = "#7f8a9c";
      ctx.fillText(this.label.dataset.empty || "", 12, 24);
      this.label.textContent = "";
      return;
    }
    const [first, last] = visibleRange(bars.length, plotW, SLOT, this.offset);
    const view = bars.slice(first, last);
    const ma = movingAverage(bars.map((b) => b.close), this.maPeriod).slice(first, last);
    const { min, max } = priceRange(view, ma);
    this.axis(ctx, min, max, top, bottom, plotW);
    const maxVol = Math.max(1, ...view.map((b) => b.volume));
    const y = (v) => scaleY(v, min, max, top, bottom);
    view.forEach((b, i) => {
      const x = i * SLOT + SLOT / 2;
      const color = b.close >= b.open ? UP : DOWN;
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.beginPath(); ctx.moveTo(Math.round(x) + 0.5, y(b.high)); ctx.lineTo(Math.round(x) + 0.5, y(b.low)); ctx.stroke();
      const bodyTop = y(Math.max(b.open, b.close));
      const bodyH = Math.max(1, Math.abs(y(b.open) - y(b.close)));
      ctx.fillRect(Math.round(x - SLOT / 2 + 1), bodyTop, SLOT - 2, bodyH);
      const vh = (b.volume / maxVol) * (volBottom - volTop);
      ctx.globalAlpha = 0.6;
      ctx.fillRect(Math.round(x - SLOT / 2 + 1), volBottom - vh, SLOT - 2, vh);
      ctx.globalAlpha = 1;
    });
    ctx.strokeStyle = "#f0b90b";
    ctx.beginPath();
    let started = false;
    ma.forEach((v, i) => {
      if (Number.isNaN(v)) return;
      const px = i * SLOT + SLOT / 2;
      if (!started) { ctx.moveTo(px, y(v)); started = true; } else ctx.lineTo(px, y(v));
    });
    ctx.stroke();
    for (const m of this.marks) {
      if (m.index < first || m.index >= last) continue;
      const px = (m.index - first) * SLOT + SLOT / 2;
      const py = y(m.price);
      ctx.fillStyle = m.direction === "BUY" ? "#ff6bd5" : "#4fc3f7";
      ctx.beginPath();
      if (m.direction === "BUY") { ctx.moveTo(px, py); ctx.lineTo(px - 5, py + 9); ctx.lineTo(px + 5, py + 9); }
      else { ctx.moveTo(px, py); ctx.lineTo(px - 5, py - 9); ctx.lineTo(px + 5, py - 9); }
      ctx.closePath(); ctx.fill();
    }
    const lastBar = bars[bars.length - 1];
    const ly = Math.round(y(lastBar.close)) + 0.5;
    ctx.strokeStyle = "#5b8def"; ctx.setLineDash([3, 3]);
    ctx.beginPath(); ctx.moveTo(0, ly); ctx.lineTo(plotW, ly); ctx.stroke(); ctx.setLineDash([]);
    ctx.fillStyle = "#5b8def"; ctx.fillRect(plotW, ly - 8, AXIS, 16);
    ctx.fillStyle = "#fff"; ctx.fillText(fmtPrice(lastBar.close, this.decimals), plotW + 4, ly + 4);
    let shown = lastBar;
    if (this.mouse && this.mouse.x < plotW) {
      const idx = indexAtX(this.mouse.x, first, last, SLOT);
      shown = bars[idx];
      const cx = (idx - first) * SLOT + SLOT / 2;
      ctx.strokeStyle = "#8893a5"; ctx.setLineDash([2, 2]);
      ctx.beginPath(); ctx.moveTo(cx, top); ctx.lineTo(cx, volBottom); ctx.moveTo(0, this.mouse.y); ctx.lineTo(plotW, this.mouse.y); ctx.stroke();
      ctx.setLineDash([]);
    }
    ctx.fillStyle = "#7f8a9c";
    ctx.fillText(nsBarLabel(view[0].datetime, this.durationNs), 2, volBottom + 12);
    const lastLabel = nsBarLabel(view[view.length - 1].datetime, this.durationNs);
    ctx.fillText(lastLabel, Math.max(2, plotW - ctx.measureText(lastLabel).width - 2), volBottom + 12);
    const idxShown = bars.indexOf(shown);
    const maShown = movingAverage(bars.map((b) => b.close), this.maPeriod)[idxShown];
    const d = this.decimals;
    this.label.textContent = `${nsBarLabel(shown.datetime, this.durationNs)}  O ${fmtPrice(shown.open, d)}  H ${fmtPrice(shown.high, d)}  L ${fmtPrice(shown.low, d)}  C ${fmtPrice(shown.close, d)}  V ${integer(shown.volume)}  MA${this.maPeriod} ${fmtPrice(maShown, d)}`;
  }

  drawTicks(ctx, plotW, top, bottom, volBottom) {
    const points = this.ticks;
    if (!points.length) {
      ctx.fillStyle = "#7f8a9c";
      ctx.fillText(this.label.dataset.empty || "", 12, 24);
      this.label.textContent = "";
      return;
    }
    const slot = 3;
    const [first, last] = visibleRange(points.length, plotW, slot, this.offset);
    const view = points.slice(first, last);
    const { min, max } = priceRange(view.map((p) => ({ low: p.price, high: p.price })));
    this.axis(ctx, min, max, top, volBottom, plotW);
    ctx.strokeStyle = "#5b8def";
    ctx.beginPath();
    view.forEach((p, i) => {
      const yy = scaleY(p.price, min, max, top, volBottom);
      if (i === 0) ctx.moveTo(i * slot, yy); else ctx.lineTo(i * slot, yy);
    });
    ctx.stroke();
    const lastPoint = points[points.length - 1];
    this.label.textContent = `${nsBarLabel(lastPoint.datetime, 1)}  ${fmtPrice(lastPoint.price, this.decimals)}`;
  }
}
