/**
 * docs/bench.svg: one group of bars per workload, one bar per wrapguard mode, as speed relative
 * to the wireguard-go pair (1.0, the dashed line). For "lower is better" quantities (latency,
 * cold start, CPU, memory) the bar is baseline ÷ ours, so that longer is better everywhere.
 *
 * @module
 */
import { byWorkload, type Meta, MODE_LABELS, type Result } from "./report.ts";

const COLORS = { b: "#3b6ea8", c: "#e08a2c", d: "#4f9a55" } as const;

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** The chart as SVG text. */
export function renderChart(results: Result[], meta: Meta): string {
  const rows = [...byWorkload(results)].filter(([, r]) => r.a && Number.isFinite(r.a.value));
  const modes = ["b", "c", "d"] as const;
  const barH = 9, gap = 10, left = 330, width = 900, plotW = width - left - 70;
  const top = 64;
  const groupH = modes.length * barH + gap;
  const height = top + rows.length * groupH + 40;
  // Scale: 0 .. max(2, largest ratio), capped at 4 (longer bars are clipped and labelled).
  const ratios: number[] = [];
  for (const [, r] of rows) {
    for (const m of modes) {
      const v = r[m]?.value, a = r.a!.value;
      if (v === undefined || !Number.isFinite(v) || v === 0) continue;
      ratios.push(r.a!.better === "lower" ? a / v : v / a);
    }
  }
  const max = Math.min(4, Math.max(1.5, ...ratios.filter(Number.isFinite)));
  const x = (ratio: number) => left + Math.min(ratio, max) / max * plotW;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="15" font-weight="bold">wrapguard vs a wireguard-go pair with kernel TCP (1.0 = same; longer is better)</text>`,
    `<text x="10" y="38" fill="#555">${
      esc(
        `${meta.date} · ${meta.machine} · medians of ${meta.repeat} · lower-is-better rows drawn as baseline ÷ ours`,
      )
    }</text>`,
  ];
  modes.forEach((m, i) => {
    const lx = left + i * 170;
    out.push(`<rect x="${lx}" y="46" width="10" height="10" fill="${COLORS[m]}"/>`);
    out.push(`<text x="${lx + 14}" y="55">(${m}) ${MODE_LABELS[m]}</text>`);
  });
  rows.forEach(([name, r], gi) => {
    const y0 = top + gi * groupH;
    const unit = r.a!.unit;
    out.push(
      `<text x="${left - 8}" y="${y0 + groupH / 2}" text-anchor="end">${esc(name)}</text>`,
      `<text x="${left - 8}" y="${
        y0 + groupH / 2 + 12
      }" text-anchor="end" fill="#777" font-size="10">(a) ${esc(r.a!.value.toPrecision(3))} ${
        esc(unit)
      }</text>`,
    );
    modes.forEach((m, i) => {
      const v = r[m]?.value;
      const y = y0 + i * barH;
      if (v === undefined || !Number.isFinite(v) || v === 0) {
        out.push(`<text x="${left + 4}" y="${y + barH - 1}" fill="#999" font-size="9">n/a</text>`);
        return;
      }
      if (r.a!.value === 0) {
        // No ratio to a zero baseline (e.g. the kernel holds wireguard-go's idle connections,
        // so the tunnel process spends nothing on them): show our own value instead.
        out.push(
          `<text x="${left + 4}" y="${y + barH - 1}" fill="${COLORS[m]}" font-size="9">${
            esc(v.toPrecision(3))
          } ${esc(unit)} (no ratio: baseline 0)</text>`,
        );
        return;
      }
      const ratio = r.a!.better === "lower" ? r.a!.value / v : v / r.a!.value;
      out.push(
        `<rect x="${left}" y="${y}" width="${(x(ratio) - left).toFixed(1)}" height="${
          barH - 1
        }" fill="${COLORS[m]}"/>`,
        `<text x="${x(ratio) + 3}" y="${y + barH - 1}" font-size="9">${ratio.toFixed(2)}</text>`,
      );
    });
  });
  const bottom = top + rows.length * groupH;
  out.push(
    `<line x1="${x(1)}" y1="${top - 4}" x2="${
      x(1)
    }" y2="${bottom}" stroke="#000" stroke-dasharray="4 3"/>`,
    `<line x1="${left}" y1="${top - 4}" x2="${left}" y2="${bottom}" stroke="#000"/>`,
  );
  for (let t = 0; t <= max + 1e-9; t += 0.5) {
    out.push(`<text x="${x(t)}" y="${bottom + 14}" text-anchor="middle" fill="#555">${t}×</text>`);
  }
  out.push("</svg>");
  return out.join("\n") + "\n";
}
