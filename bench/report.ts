import type { MachineFacts } from './machine.js';

export type Unit = 'ms' | 'bytes' | 'MB/s';

/** One measured quantity, strata beside its peer from the same run. */
export interface Row {
  workload: string;
  metric: string;
  unit: Unit;
  /** null: strata's side failed (see the workload's errors) */
  strata: number | null;
  peerName: string;
  /** null: the peer's side failed or has no such number */
  peer: number | null;
  /** `ratio`: strata/peer must be <= max; `strata`: strata's own value must be <= max (in `unit`) */
  goal?: { kind: 'ratio' | 'strata'; max: number };
}

export interface WorkloadResult {
  name: string;
  rows: Row[];
  /** facts needed to read the rows (sizes, counts, sanity checks) */
  notes: string[];
  /** what failed; the rows then hold null for the side that failed */
  errors: string[];
}

function formatValue(v: number, unit: Unit): string {
  if (unit === 'ms') return v >= 100 ? `${Math.round(v)} ms` : `${v.toFixed(2)} ms`;
  if (unit === 'MB/s') return `${v.toFixed(1)} MB/s`;
  const abs = Math.abs(v);
  if (abs >= 2 ** 20) return `${(v / 2 ** 20).toFixed(1)} MiB`;
  if (abs >= 2 ** 10) return `${(v / 2 ** 10).toFixed(1)} KiB`;
  return `${Math.round(v)} B`;
}

const ratioOf = (r: Row) => (r.strata !== null && r.peer !== null && r.peer !== 0 ? r.strata / r.peer : null);

function goalText(r: Row): [string, string] {
  if (!r.goal) return ['', ''];
  const ratio = ratioOf(r);
  if (r.goal.kind === 'ratio') return [`ratio <= ${r.goal.max}`, ratio === null ? '?' : ratio <= r.goal.max ? 'yes' : 'no'];
  return [`<= ${formatValue(r.goal.max, r.unit)}`, r.strata === null ? '?' : r.strata <= r.goal.max ? 'yes' : 'no'];
}

const cell = (v: number | null, unit: Unit) => (v === null ? 'failed' : formatValue(v, unit));

/** The results as markdown: a header with the machine, one table, then each workload's notes and errors. */
export function renderReport(opts: { date: Date; facts: MachineFacts; settings: string; results: WorkloadResult[] }): string {
  const f = opts.facts;
  const lines = [
    `# strata benchmark results`,
    '',
    `- date: ${opts.date.toISOString()}`,
    `- kernel: ${f.kernel}`,
    `- CPUs: ${f.cpus}; memory ${f.memory}`,
    `- bench filesystem: ${f.filesystem}`,
    `- node ${f.node}; ${f.tar}`,
    `- settings: ${opts.settings}`,
    '',
    'Ratio = strata / peer (lower is better).',
    '',
    '| workload | metric | strata | peer | peer value | ratio | goal | met |',
    '|---|---|---:|---|---:|---:|---|---|',
  ];
  for (const res of opts.results) {
    for (const r of res.rows) {
      const [goal, met] = goalText(r);
      lines.push(`| ${r.workload} | ${r.metric} | ${cell(r.strata, r.unit)} | ${r.peerName} | ${cell(r.peer, r.unit)} | ${ratioOf(r)?.toFixed(2) ?? ''} | ${goal} | ${met} |`);
    }
    if (res.rows.length === 0) lines.push(`| ${res.name} | **did not run** (see below) | | | | | | |`);
  }
  for (const res of opts.results) {
    if (!res.notes.length && !res.errors.length) continue;
    lines.push('', `**${res.name}**`, '');
    for (const n of res.notes) lines.push(`- ${n}`);
    for (const e of res.errors) lines.push(`- FAILED: ${e}`);
  }
  return lines.join('\n') + '\n';
}
