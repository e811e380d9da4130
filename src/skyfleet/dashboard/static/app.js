// skyfleet dashboard: polls api/state every second and renders tiles, tiers, charts and tables.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const PRIORITY_COLORS = { critical: "#f31260", standard: "#4f8cff", sheddable: "#8b93a7" };
  const params = new URLSearchParams(location.hash.slice(1));
  const key = params.get("key") || sessionStorage.getItem("skyfleet-key") || "";
  if (params.get("key")) sessionStorage.setItem("skyfleet-key", key);
  const intervalMs = Number(params.get("interval_ms") || 1000);
  let updates = 0;
  const providerColor = {};

  function colorOf(p) {
    if (!(p in providerColor)) {
      providerColor[p] = SkyCharts.PALETTE[Object.keys(providerColor).length % SkyCharts.PALETTE.length];
    }
    return providerColor[p];
  }

  const num = (v, d = 0) => (v == null ? "–" : Number(v).toLocaleString(undefined, {
    maximumFractionDigits: d, minimumFractionDigits: d }));
  const money = (v) => (v == null ? "–" : "$" + (v < 0.1 ? v.toFixed(4) : v.toFixed(2)));
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  function renderKpis(s) {
    const tot = s.totals;
    const rps = s.providers.reduce((a, p) => a + p.rps, 0);
    let wsum = 0, w = 0;
    for (const p of s.providers) if (p.ttft_ms != null) { wsum += p.ttft_ms * p.rps; w += p.rps; }
    $("k-rps").textContent = num(rps, 1);
    $("k-ttft").textContent = w > 0 ? num(wsum / w, 0) + " ms" : "–";
    $("k-requests").textContent = num(tot.requests);
    $("k-retries").textContent = num(tot.retries);
    $("k-spill").textContent = num(tot.spillovers);
    const shed = Object.values(tot.shed).reduce((a, b) => a + b, 0);
    $("k-shed").textContent = num(shed);
    $("k-cost").textContent = money(tot.usage_cost != null && tot.usage_cost > 0 ? tot.usage_cost : tot.fleet_cost);
    $("k-rate").textContent = money(tot.up_cost_per_hour);
    $("k-rate-label").textContent = `$/hour running (planned ${money(tot.cost_per_hour)})`;
  }

  function renderTiers(s) {
    const box = $("tiers");
    box.innerHTML = "";
    for (const tier of ["primary", "spillover", "fallback"]) {
      const card = el("div", "tier");
      card.dataset.tier = tier;
      card.appendChild(el("h3", null, tier));
      const eps = s.endpoints.filter((e) => e.tier === tier);
      if (!eps.length) card.appendChild(el("div", "empty", "no endpoints"));
      for (const e of eps) {
        const row = el("div", "ep");
        row.dataset.endpoint = e.name;
        row.dataset.provider = e.provider;
        row.dataset.status = e.status;
        row.appendChild(el("span", "dot"));
        const nm = el("span", "nm", `${e.provider} · ${e.name}`);
        nm.style.borderLeft = `3px solid ${colorOf(e.provider)}`;
        nm.style.paddingLeft = "6px";
        row.appendChild(nm);
        row.appendChild(el("span", "st", e.status));
        const util = e.utilisation == null ? 0 : Math.min(1, e.utilisation);
        const bar = el("div", "bar");
        const fill = el("i");
        fill.style.width = `${(util * 100).toFixed(1)}%`;
        bar.appendChild(fill);
        row.appendChild(bar);
        const acc = [e.accelerator, e.region].filter(Boolean).join(" · ");
        row.appendChild(el("span", "meta",
          `${acc}${acc ? " · " : ""}${num(e.rps, 1)} req/s · in flight ${num(e.in_flight)}/${num(e.capacity)} · ${money(e.price_per_hour)}/h`));
        card.appendChild(row);
      }
      box.appendChild(card);
    }
  }

  function chart(id, s, series, opts) {
    SkyCharts.draw($("c-" + id), s.series.t, series, opts);
    SkyCharts.legend($("l-" + id), series);
  }

  function outageBands(s) {
    // Shade the periods when any provider was down (from the health events).
    const bands = [];
    const open = {};
    for (const ev of s.events) {
      if (ev.to !== "up" && !(ev.provider in open)) open[ev.provider] = ev.t;
      if (ev.to === "up" && ev.provider in open) {
        bands.push({ from: open[ev.provider], to: ev.t });
        delete open[ev.provider];
      }
    }
    for (const p in open) bands.push({ from: open[p], to: null });
    return bands;
  }

  function renderCharts(s) {
    const provs = Object.keys(s.series.rps);
    const bands = outageBands(s);
    chart("rps", s, provs.map((p) => ({ name: p, values: s.series.rps[p], color: colorOf(p) })), { bands });
    chart("ttft", s, provs.map((p) => ({ name: p, values: s.series.ttft_ms[p], color: colorOf(p) })), { bands });
    const pr = ["critical", "standard", "sheddable"];
    chart("queue", s, pr.map((p) => ({ name: p, values: s.series.queue[p], color: PRIORITY_COLORS[p] })), {});
    chart("shed", s, pr.map((p) => ({ name: p, values: s.series.shed_per_s[p], color: PRIORITY_COLORS[p] })), {});
    chart("retry", s, [
      { name: "retries", values: s.series.retries_per_s, color: "#f5a524" },
      { name: "spillovers", values: s.series.spillovers_per_s, color: "#06b7db" },
      { name: "errors", values: s.series.errors_per_s, color: "#f31260" },
    ], { bands });
  }

  function renderEvents(s) {
    const ol = $("events");
    ol.innerHTML = "";
    const evs = [...s.events].reverse();
    if (!evs.length) ol.appendChild(el("li", null, "no health changes yet"));
    for (const ev of evs) {
      const li = el("li", ev.to, `${SkyCharts.clock(ev.t)} ${ev.provider} · ${ev.endpoint}: ${ev.from} → ${ev.to}`);
      ol.appendChild(li);
    }
  }

  function renderPlan(s) {
    const tb = $("plan").querySelector("tbody");
    tb.innerHTML = "";
    for (const p of s.providers) {
      const tr = el("tr");
      tr.dataset.provider = p.name;
      tr.dataset.status = p.status;
      const cells = [p.name, p.tiers.join(", "), `${p.endpoints_up}/${p.endpoints}`, num(p.capacity),
        num(100 * p.planned_share, 0) + "%", num(100 * p.actual_share, 0) + "%", num(p.rps, 1),
        p.ttft_ms == null ? "–" : num(p.ttft_ms, 0), money(p.cost_per_hour)];
      for (const c of cells) tr.appendChild(el("td", null, c));
      tb.appendChild(tr);
    }
  }

  function render(s) {
    renderKpis(s);
    renderTiers(s);
    renderCharts(s);
    renderEvents(s);
    renderPlan(s);
  }

  async function tick() {
    const live = $("live");
    try {
      const r = await fetch("api/state?window=300", {
        headers: key ? { Authorization: "Bearer " + key } : {}, cache: "no-store" });
      if (r.status === 401 || r.status === 403) {
        live.textContent = "admin key needed: open /dashboard/#key=…";
        live.className = "pill stale";
      } else if (!r.ok) {
        throw new Error("HTTP " + r.status);
      } else {
        const s = await r.json();
        if (s.ready) {
          render(s);
          updates += 1;
          document.body.dataset.updates = String(updates);
          live.textContent = "live · " + SkyCharts.clock(s.now);
          live.className = "pill ok";
        } else {
          live.textContent = "waiting for first sample…";
        }
      }
    } catch (e) {
      live.textContent = "gateway unreachable";
      live.className = "pill stale";
    }
    setTimeout(tick, intervalMs);
  }
  tick();
})();
