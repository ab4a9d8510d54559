// How findings are shown: a table per check for people, one JSON document for
// scripts, and a named error for the pipeline's preflight.

import { NetworkPreflightError } from '../errors.js';
import type { Finding, FindingStatus, NetworkReport } from './types.js';

export function toReport(findings: Finding[]): NetworkReport {
  return { ok: !findings.some((f) => f.status === 'fail'), findings };
}

const RANK: Record<FindingStatus, number> = { pass: 0, warn: 1, fail: 2 };

/** Worst status of a check (fail > warn > pass). */
export function checkStatus(findings: Finding[], check: string): FindingStatus | undefined {
  let worst: FindingStatus | undefined;
  for (const f of findings) if (f.check === check && (!worst || RANK[f.status] > RANK[worst])) worst = f.status;
  return worst;
}

/** Ids of the checks with at least one failing finding, in report order. */
export function failedChecks(findings: Finding[]): string[] {
  return [...new Set(findings.filter((f) => f.status === 'fail').map((f) => f.check))];
}

function wrap(text: string, width: number, indent: string): string {
  const words = text.split(/\s+/).filter(Boolean);
  const lines: string[] = [];
  let line = '';
  for (const w of words) {
    if (line && line.length + 1 + w.length > width) {
      lines.push(line);
      line = w;
    } else line = line ? `${line} ${w}` : w;
  }
  if (line) lines.push(line);
  return lines.map((l, i) => (i === 0 ? l : indent + l)).join('\n');
}

/** Azure resource ids are long: the table shows `type/name`; JSON keeps the full id. */
function shortResource(resource: string): string {
  if (!resource.startsWith('/subscriptions/')) return resource;
  const parts = resource.split('/').filter(Boolean);
  return parts.slice(-2).join('/');
}

/**
 * One block per check, in the order the checks ran:
 *
 *   FAIL  endpoint.sts
 *         fail  vpc-0a…  no interface endpoint for com.amazonaws.eu-west-1.sts …
 *               fix: aws ec2 create-vpc-endpoint …
 */
export function formatFindingsTable(findings: Finding[], opts: { width?: number } = {}): string {
  const width = opts.width ?? 110;
  const checks = [...new Set(findings.map((f) => f.check))];
  const resW = Math.min(34, Math.max(8, ...findings.map((f) => shortResource(f.resource).length)));
  const out: string[] = [];
  for (const check of checks) {
    const status = checkStatus(findings, check)!;
    out.push(`${status.toUpperCase().padEnd(5)} ${check}`);
    for (const f of findings.filter((x) => x.check === check)) {
      const short = shortResource(f.resource);
      const res = short.length > resW ? `…${short.slice(-(resW - 1))}` : short.padEnd(resW);
      const head = `      ${f.status.padEnd(5)} ${res}  `;
      const indent = ' '.repeat(head.length);
      out.push(head + wrap(f.message, Math.max(30, width - head.length), indent));
      if (f.fix) out.push(`${' '.repeat(12)}fix: ${wrap(f.fix, Math.max(30, width - 17), ' '.repeat(17))}`);
    }
  }
  const n = (s: FindingStatus) => checks.filter((c) => checkStatus(findings, c) === s).length;
  out.push('');
  out.push(`${checks.length} checks: ${n('pass')} pass, ${n('warn')} warn, ${n('fail')} fail${n('fail') ? ' — a private-network worker would not get through; apply the fixes above' : ''}`);
  return out.join('\n') + '\n';
}

export function formatFindingsJson(findings: Finding[]): string {
  const r = toReport(findings);
  return JSON.stringify({ ok: r.ok, findings: r.findings.map(({ check, status, resource, message, fix }) => ({ check, status, resource, message, fix })) }, null, 2) + '\n';
}

/**
 * For the pipeline: throws NetworkPreflightError naming every failing check and
 * its fix, so the VM fails fast before a worker is deployed. Warnings pass.
 */
export function assertPreflight(findings: Finding[], where = 'private-network preflight'): void {
  const failing = findings.filter((f) => f.status === 'fail');
  if (failing.length === 0) return;
  const lines = failing.map((f) => `${f.check} (${f.resource}): ${f.message}${f.fix ? ` — fix: ${f.fix}` : ''}`);
  throw new NetworkPreflightError(`${where} failed: a worker without a public IP would not get through.\n  - ${lines.join('\n  - ')}\nRun \`tender check-network\` for the full report.`);
}
