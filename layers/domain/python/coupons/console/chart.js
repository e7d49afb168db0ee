// Inline SVG charts built with DOM APIs (no chart library, no HTML strings).

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

/**
 * Columns per label, one column per series in each group.
 * labels: ["2026-05-01", ...]; series: [{name, values: [n...], className}];
 * format(n) renders values for the axis and the tooltips.
 */
export function columnChart({ title, labels, series, format = String, height = 220 }) {
  const left = 64, right = 12, top = 28, bottom = 40;
  const groupWidth = Math.max(14, Math.min(96, Math.floor(720 / Math.max(1, labels.length))));
  const width = left + right + groupWidth * labels.length;
  const plot = height - top - bottom;
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values)));
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, width, height, role: "img", class: "chart columns",
    "aria-label": title,
  });
  root.append(svg("title", {}, title));
  root.append(svg("text", { x: left, y: 16, class: "chart-title" }, title));
  for (let tick = 0; tick <= 4; tick++) {
    const value = (max * tick) / 4;
    const y = top + plot - (plot * tick) / 4;
    root.append(svg("line", { x1: left, x2: width - right, y1: y, y2: y, class: "grid" }));
    root.append(svg("text", { x: left - 6, y: y + 4, class: "axis", "text-anchor": "end" }, format(value)));
  }
  const barWidth = Math.max(3, Math.floor((groupWidth - 4) / Math.max(1, series.length)));
  labels.forEach((label, i) => {
    const x0 = left + i * groupWidth + 2;
    series.forEach((s, j) => {
      const value = s.values[i] || 0;
      const h = Math.round((plot * value) / max);
      const bar = svg("rect", {
        x: x0 + j * barWidth, y: top + plot - h, width: Math.max(1, barWidth - 1), height: Math.max(0, h),
        class: `bar ${s.className || ""}`, "data-label": label, "data-series": s.name, "data-value": value,
      });
      bar.append(svg("title", {}, `${label} · ${s.name}: ${format(value)}`));
      root.append(bar);
    });
    const every = Math.ceil(labels.length / 10);
    if (i % every === 0 || i === labels.length - 1) {
      root.append(svg("text", {
        x: x0 + (groupWidth - 4) / 2, y: height - bottom + 16, class: "axis", "text-anchor": "middle",
      }, label.length === 10 ? label.slice(5) : label));
    }
  });
  const legend = svg("g", { class: "legend" });
  series.forEach((s, j) => {
    const x = width - right - (series.length - j) * 120;
    legend.append(svg("rect", { x, y: height - 14, width: 10, height: 10, class: `bar ${s.className || ""}` }));
    legend.append(svg("text", { x: x + 14, y: height - 5, class: "axis" }, s.name));
  });
  root.append(legend);
  return root;
}

/** Horizontal bars: entries [{label, value, note}] (note: extra text after the value). */
export function barList({ title, entries, format = String }) {
  const rowHeight = 26, left = 90, right = 150, width = 520;
  const height = 30 + rowHeight * entries.length;
  const max = niceMax(Math.max(0, ...entries.map((e) => e.value)));
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, width, height, role: "img", class: "chart bars", "aria-label": title,
  });
  root.append(svg("title", {}, title));
  root.append(svg("text", { x: 0, y: 16, class: "chart-title" }, title));
  entries.forEach((entry, i) => {
    const y = 28 + i * rowHeight;
    const w = Math.round(((width - left - right) * entry.value) / max);
    root.append(svg("text", { x: left - 8, y: y + 15, class: "axis", "text-anchor": "end" }, entry.label));
    const bar = svg("rect", {
      x: left, y: y + 3, width: Math.max(1, w), height: rowHeight - 8, class: "bar",
      "data-label": entry.label, "data-value": entry.value,
    });
    bar.append(svg("title", {}, `${entry.label}: ${format(entry.value)}`));
    root.append(bar);
    root.append(svg("text", { x: left + w + 6, y: y + 15, class: "axis" },
      format(entry.value) + (entry.note ? ` · ${entry.note}` : "")));
  });
  return root;
}
