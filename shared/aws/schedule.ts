// A policy's 5-field cron ("0 2 * * *", minute hour day-of-month month
// day-of-week, UTC) as an EventBridge expression: six fields, a year, and a
// "?" in one of the two day fields (EventBridge cannot take both), with
// day-of-week numbered 1–7 from Sunday instead of 0–6.

import { ConfigError } from '../core/errors.js';

function shiftDow(field: string): string {
  return field.replace(/\d+/g, (n) => String((Number(n) % 7) + 1));
}

export function toEventBridgeCron(expr: string, policy = 'policy'): string {
  const f = expr.trim().split(/\s+/);
  if (f.length !== 5) throw new ConfigError(`policy "${policy}": schedule "${expr}" must have 5 fields (minute hour day-of-month month day-of-week)`);
  let [min, hour, dom, mon, dow] = f as [string, string, string, string, string];
  if (dow === '*' || dow === '?') dow = '?';
  else if (dom === '*' || dom === '?') {
    dom = '?';
    // "1/2" style steps keep their step; only day numbers move.
    dow = /\//.test(dow) ? dow.replace(/^(\d+)/, (n) => String((Number(n) % 7) + 1)) : shiftDow(dow);
  } else {
    throw new ConfigError(`policy "${policy}": schedule "${expr}" sets both day-of-month and day-of-week, which EventBridge cannot express — keep one of them "*"`);
  }
  if (dom === '?' && dow === '?') dom = '*';
  // EventBridge writes increments from a start value ("0/15"), not from "*".
  min = min.replace(/^\*\//, '0/');
  hour = hour.replace(/^\*\//, '0/');
  dom = dom.replace(/^\*\//, '1/');
  mon = mon.replace(/^\*\//, '1/');
  return `cron(${min} ${hour} ${dom} ${mon} ${dow} *)`;
}
