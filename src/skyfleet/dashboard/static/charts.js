// Small line charts on <canvas>, written for the skyfleet dashboard (no dependencies).
"use strict";

const SkyCharts = (() => {
  const PALETTE = ["#4f8cff", "#f5a524", "#17c964", "#f31260", "#9353d3", "#06b7db", "#ff7a45"];

  // The top of the y axis: 4 × a "nice" step (1, 2, 2.5 or 5 × 10^k), so ticks are round.
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const raw = v / 4;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) {
      if (m * p >= raw) return 4 * m * p;
    }
    return 40 * p;
  }

  function fmt(v) {
    if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k";
    if (v >= 10 || v === 0) return v.toFixed(0);
    return v.toFixed(v >= 1 ? 1 : 2);
  }

  function clock(t) {
    const d = new Date(t * 1000);
    return d.toTimeString().slice(0, 8);
  }

  // series: [{name, values:[number|null], color?}], t: [unix seconds]
  function draw(canvas, t, series, opts = {}) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 400;
    const h = canvas.clientHeight || 180;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const fg = css.getPropertyValue("--muted").trim() || "#889";
    const grid = css.getPropertyValue("--grid").trim() || "#2a3040";
    const pad = { l: 44, r: 10, t: 10, b: 22 };
    const pw = w - pad.l - pad.r;
    const ph = h - pad.t - pad.b;
    let ymax = opts.min_max || 0;
    for (const s of series) for (const v of s.values) if (v != null && v > ymax) ymax = v;
    ymax = niceMax(ymax * 1.05);
    const n = t.length;
    const t0 = n ? t[0] : 0;
    const t1 = n ? t[n - 1] : 1;
    const span = Math.max(t1 - t0, opts.min_span || 60);
    const tStart = t1 - span;
    const x = (tt) => pad.l + ((tt - tStart) / span) * pw;
    const y = (v) => pad.t + ph - (v / ymax) * ph;

    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = fg;
    ctx.strokeStyle = grid;
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const v = (ymax * i) / 4;
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(pad.l, yy);
      ctx.lineTo(w - pad.r, yy);
      ctx.stroke();
      ctx.fillText(fmt(v), pad.l - 6, yy);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let i = 0; i <= 3; i++) {
      const tt = tStart + (span * i) / 3;
      ctx.fillText(clock(tt), Math.min(Math.max(x(tt), pad.l + 24), w - pad.r - 24), h - pad.b + 6);
    }
    (opts.bands || []).forEach((b) => {
      const a = Math.max(x(b.from), pad.l);
      const z = Math.min(x(b.to == null ? t1 : b.to), w - pad.r);
      if (z > a) {
        ctx.fillStyle = b.color || "rgba(243,18,96,0.12)";
        ctx.fillRect(a, pad.t, z - a, ph);
      }
    });
    let points = 0;
    series.forEach((s, i) => {
      ctx.strokeStyle = s.color || PALETTE[i % PALETTE.length];
      ctx.lineWidth = 1.8;
      ctx.beginPath();
      let pen = false;
      for (let k = 0; k < n; k++) {
        const v = s.values[k];
        if (v == null || t[k] < tStart) {
          pen = false;
          continue;
        }
        const xx = x(t[k]);
        const yy = y(v);
        if (pen) ctx.lineTo(xx, yy);
        else ctx.moveTo(xx, yy);
        pen = true;
        points += 1;
      }
      ctx.stroke();
    });
    canvas.dataset.points = String(points);
    canvas.dataset.lastT = n ? String(t1) : "";
    return points;
  }

  function legend(el, series) {
    el.innerHTML = "";
    series.forEach((s, i) => {
      const item = document.createElement("span");
      item.className = "lg";
      const sw = document.createElement("i");
      sw.style.background = s.color || PALETTE[i % PALETTE.length];
      item.appendChild(sw);
      const last = [...s.values].reverse().find((v) => v != null);
      item.appendChild(document.createTextNode(`${s.name} ${last == null ? "–" : fmt(last)}`));
      el.appendChild(item);
    });
  }

  return { draw, legend, PALETTE, fmt, clock };
})();
