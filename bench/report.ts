/**
 * The bench's results as a text table with ratios to the wireguard-go pair (mode a).
 *
 * @module
 */

/** One measured quantity. */
export interface Workload {
  name: string;
  unit: string;
  /** Which direction is better, for the ratio's reading. */
  better: "higher" | "lower";
}

/** The median of a workload's samples in one mode. */
export interface Result extends Workload {
  mode: "a" | "b" | "c" | "d";
  value: number;
  samples: number[];
}

/** When and where the numbers were taken. */
export interface Meta {
  date: string;
  machine: string;
  repeat: number;
  seconds: number;
  quick: boolean;
  deno: string;
}

export const MODE_LABELS = {
  a: "wireguard-go pair",
  b: "wrapguard run",
  c: "library API",
  d: "forward",
} as const;

function fmt(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return "—";
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/** Rows by workload name, in first-seen order. */
export function byWorkload(
  results: Result[],
): Map<string, Partial<Record<Result["mode"], Result>>> {
  const rows = new Map<string, Partial<Record<Result["mode"], Result>>>();
  for (const r of results) {
    const row = rows.get(r.name) ?? {};
    row[r.mode] = r;
    rows.set(r.name, row);
  }
  return rows;
}

/** The table printed at the end of a run (Markdown, so that docs can quote it). */
export function formatTable(results: Result[], meta: Meta): string {
  const lines = [
    `wrapguard bench, ${meta.date}, ${meta.machine}, Deno ${meta.deno}`,
    `medians of ${meta.repeat} run(s), ${meta.seconds} s per timed run; ratio = mode ÷ (a)`,
    "",
    "| workload | unit | (a) wireguard-go pair | (b) wrapguard run | ratio | (c) library API | ratio | (d) forward | ratio |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const [name, row] of byWorkload(results)) {
    const a = row.a?.value;
    const cells = (["b", "c", "d"] as const).flatMap((m) => {
      const v = row[m]?.value;
      const ratio = a !== undefined && v !== undefined && a !== 0 ? v / a : undefined;
      return [
        fmt(v),
        ratio === undefined || !Number.isFinite(ratio) ? "—" : `${ratio.toFixed(2)}×`,
      ];
    });
    const unit = row.a?.unit ?? row.b?.unit ?? "";
    const better = (row.a ?? row.b)?.better === "lower" ? " (lower is better)" : "";
    lines.push(`| ${name}${better} | ${unit} | ${fmt(a)} | ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}
