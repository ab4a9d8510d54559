// Retention as a pure function that explains itself: which restore points to
// keep (each with the reasons it is kept) and which to remove. Age is measured
// from the newest complete point, never the wall clock, so a policy whose
// backups stopped running does not slowly delete everything it still has.

import type { Retention } from './config.js';

export interface RetentionCandidate {
  id: string;
  /** ISO time the restore point was taken. */
  time: string;
}

export interface RetentionDecision {
  keep: Array<{ id: string; time: string; reasons: string[] }>;
  remove: Array<{ id: string; time: string }>;
}

type Bucket = 'daily' | 'weekly' | 'monthly' | 'yearly';

const DAY_MS = 86_400_000;

function dayKey(d: Date): string {
  return d.toISOString().slice(0, 10);
}

/** ISO-8601 week: weeks start on Monday, week 1 holds the year's first Thursday. */
function isoWeek(d: Date): { year: number; week: number } {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const dow = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - dow);
  const yearStart = Date.UTC(t.getUTCFullYear(), 0, 1);
  return { year: t.getUTCFullYear(), week: Math.ceil(((t.getTime() - yearStart) / DAY_MS + 1) / 7) };
}

function weekKey(d: Date): string {
  const { year, week } = isoWeek(d);
  return `${year}-W${String(week).padStart(2, '0')}`;
}

function monthKey(d: Date): string {
  return d.toISOString().slice(0, 7);
}

function yearKey(d: Date): string {
  return String(d.getUTCFullYear());
}

/** Index of the period holding `d`, counted back from the newest point's period (0 = same period). */
function periodsBack(bucket: Bucket, newest: Date, d: Date): number {
  switch (bucket) {
    case 'daily': {
      const a = Date.UTC(newest.getUTCFullYear(), newest.getUTCMonth(), newest.getUTCDate());
      const b = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
      return Math.round((a - b) / DAY_MS);
    }
    case 'weekly': {
      // Mondays of both weeks, in days.
      const monday = (x: Date) => {
        const t = Date.UTC(x.getUTCFullYear(), x.getUTCMonth(), x.getUTCDate());
        return t - (((new Date(t).getUTCDay() + 6) % 7) * DAY_MS);
      };
      return Math.round((monday(newest) - monday(d)) / (7 * DAY_MS));
    }
    case 'monthly':
      return (newest.getUTCFullYear() - d.getUTCFullYear()) * 12 + (newest.getUTCMonth() - d.getUTCMonth());
    case 'yearly':
      return newest.getUTCFullYear() - d.getUTCFullYear();
  }
}

const KEY: Record<Bucket, (d: Date) => string> = { daily: dayKey, weekly: weekKey, monthly: monthKey, yearly: yearKey };

/**
 * Keeps the `last` newest points and, for each of the last `daily` days, `weekly` ISO weeks, `monthly`
 * months and `yearly` years (UTC, the newest point's period counting as the
 * first), the newest point of that period. The newest point is always kept.
 * Points with an unreadable time are kept (never delete what we cannot date).
 */
export function applyRetentionPolicy(points: RetentionCandidate[], policy: Retention): RetentionDecision {
  const dated = points.map((p) => ({ ...p, at: new Date(p.time) }));
  const undated = dated.filter((p) => Number.isNaN(p.at.getTime()));
  const valid = dated.filter((p) => !Number.isNaN(p.at.getTime())).sort((a, b) => b.at.getTime() - a.at.getTime() || (a.id < b.id ? 1 : -1));
  const reasons = new Map<string, string[]>();
  const addReason = (id: string, r: string) => {
    const list = reasons.get(id) ?? [];
    list.push(r);
    reasons.set(id, list);
  };
  for (const p of undated) addReason(p.id, 'time unreadable: kept to be safe');
  if (valid.length === 0) {
    return { keep: undated.map((p) => ({ id: p.id, time: p.time, reasons: reasons.get(p.id)! })), remove: [] };
  }
  const newest = valid[0].at;
  addReason(valid[0].id, 'newest');
  valid.slice(0, policy.last ?? 0).forEach((p, i) => addReason(p.id, `last ${i + 1}`));
  for (const bucket of ['daily', 'weekly', 'monthly', 'yearly'] as const) {
    const n = policy[bucket];
    if (!n) continue;
    const seen = new Set<string>();
    // valid is newest first, so the first point met in a period is that period's newest.
    for (const p of valid) {
      if (periodsBack(bucket, newest, p.at) >= n) continue;
      const key = KEY[bucket](p.at);
      if (seen.has(key)) continue;
      seen.add(key);
      addReason(p.id, `${bucket} ${key}`);
    }
  }
  const keep: RetentionDecision['keep'] = [];
  const remove: RetentionDecision['remove'] = [];
  for (const p of [...valid, ...undated]) {
    const r = reasons.get(p.id);
    if (r) keep.push({ id: p.id, time: p.time, reasons: r });
    else remove.push({ id: p.id, time: p.time });
  }
  return { keep, remove };
}
