// What a person watching `tender backup --local` sees: on a terminal, one live
// line per VM (step, bytes, MB/s) redrawn in place; otherwise plain lines when
// a VM changes step and now and then while it backs up. A table at the end.

import type { VmOutcome } from '../core/run-schemas.js';

export interface VmLine {
  vmId: string;
  name: string;
  step: string;
  bytesDone: number;
  bytesTotal: number;
  bytesPerSecond: number;
  note?: string;
}

export interface Output {
  write(s: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function formatRate(bytesPerSecond: number): string {
  return `${(bytesPerSecond / 1e6).toFixed(1)} MB/s`;
}

/** Words a person reads, for the state names of the state machine. */
const STEP_WORDS: Record<string, string> = {
  Snapshot: 'snapshot',
  WaitForSnapshot: 'waiting for snapshot',
  CheckSnapshot: 'waiting for snapshot',
  DeployWorker: 'deploying worker',
  WaitForWorker: 'waiting for worker',
  CheckWorker: 'waiting for worker',
  InstallWorker: 'installing worker',
  StartBackup: 'starting backup',
  WaitForBackup: 'backing up',
  CheckBackup: 'backing up',
  RevokeAccess: 'revoking access',
  DeallocateWorker: 'removing worker',
  RecordOutcome: 'recording',
  Cleanup: 'cleaning up',
};

export function stepWords(stateName: string): string | undefined {
  if (stateName.startsWith('Caught')) return 'failed, cleaning up';
  return STEP_WORDS[stateName];
}

export class ProgressView {
  private lines: VmLine[] = [];
  private drawn = 0;
  private timer?: NodeJS.Timeout;
  private lastPlain = new Map<string, { step: string; at: number }>();
  private stopped = false;

  constructor(private readonly out: Output, private readonly opts: { live?: boolean; plainEveryMs?: number } = {}) {}

  private get live(): boolean {
    return this.opts.live ?? !!this.out.isTTY;
  }

  setVms(vms: Array<{ vmId: string; name: string; totalBytes: number }>): void {
    this.lines = vms.map((v) => ({ vmId: v.vmId, name: v.name, step: 'queued', bytesDone: 0, bytesTotal: v.totalBytes, bytesPerSecond: 0 }));
    if (this.live) this.timer ??= setInterval(() => this.draw(), 200);
  }

  update(index: number, patch: Partial<VmLine>): void {
    const line = this.lines[index];
    if (!line) return;
    Object.assign(line, patch);
    if (!this.live) this.plain(line);
  }

  private plain(line: VmLine): void {
    // Plain output is for logs: the steps a person looks for, not every poll.
    if (/^(waiting for|starting backup|recording)/.test(line.step)) return;
    const prev = this.lastPlain.get(line.vmId);
    const now = Date.now();
    const changed = !prev || prev.step !== line.step;
    if (!changed && now - prev.at < (this.opts.plainEveryMs ?? 2000)) return;
    if (!changed && line.step !== 'backing up') return;
    this.lastPlain.set(line.vmId, { step: line.step, at: now });
    this.out.write(`  [${line.name}] ${this.describe(line)}\n`);
  }

  private describe(l: VmLine): string {
    const bytes = l.step === 'backing up' && l.bytesTotal > 0 ? `  ${formatBytes(l.bytesDone)} / ${formatBytes(l.bytesTotal)}  ${formatRate(l.bytesPerSecond)}` : '';
    return `${l.step}${bytes}${l.note ? `  (${l.note})` : ''}`;
  }

  private draw(): void {
    if (!this.live || this.lines.length === 0) return;
    const width = Math.max(40, (this.out.columns ?? 100) - 1);
    const nameW = Math.min(24, Math.max(4, ...this.lines.map((l) => l.name.length)));
    let s = this.drawn > 0 ? `\x1b[${this.drawn}A` : '';
    for (const l of this.lines) {
      const pct = l.bytesTotal > 0 ? Math.min(100, Math.floor((l.bytesDone / l.bytesTotal) * 100)) : 0;
      const bar = l.step === 'backing up' ? ` ${'#'.repeat(Math.floor(pct / 5)).padEnd(20, '.')} ${String(pct).padStart(3)}%` : '';
      const text = `  ${l.name.padEnd(nameW)}  ${this.describe(l)}${bar}`;
      s += `\x1b[2K${text.slice(0, width)}\n`;
    }
    this.drawn = this.lines.length;
    this.out.write(s);
  }

  /** Draws the final state once; later output goes below it. Idempotent. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.draw();
  }
}

function pad(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => '  ' + r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

export function summaryTable(vms: VmOutcome[]): string {
  const rows = [['VM', 'RESULT', 'RESTORE POINT', 'MODE', 'READ', 'STORED', 'TIME', 'DETAIL']];
  for (const v of vms) {
    rows.push([
      v.vmName,
      v.outcome,
      v.restorePointId ?? '-',
      v.outcome === 'succeeded' ? (v.incremental ? 'incremental' : 'full') : '-',
      v.bytesRead !== undefined ? formatBytes(v.bytesRead) : '-',
      v.bytesStored !== undefined ? formatBytes(v.bytesStored) : '-',
      v.seconds !== undefined ? `${v.seconds.toFixed(1)}s` : '-',
      v.outcome === 'failed' ? `${v.step}: ${v.error?.name}: ${v.error?.message}` : '',
    ]);
  }
  return pad(rows);
}
