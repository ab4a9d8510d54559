// Worker and snapshot tag templates. Values may use %applianceId%,
// %policyId% and %policyName%; anything else between percent signs is left as
// written so a literal percent sign in a tag value survives.

import { createHash } from 'node:crypto';
import { ConfigError } from './errors.js';

export interface TagContext {
  applianceId: string;
  policyId: string;
  policyName: string;
}

const PLACEHOLDER = /%(applianceId|policyId|policyName)%/g;

export function renderTagTemplate(template: string, ctx: TagContext): string {
  return template.replace(PLACEHOLDER, (_, name: keyof TagContext) => ctx[name]);
}

/** Cloud limits (AWS: key ≤ 128, value ≤ 256; Azure: name ≤ 512, value ≤ 256): the stricter of each. */
const MAX_KEY = 128;
const MAX_VALUE = 256;

export function renderTags(templates: Record<string, string>, ctx: TagContext): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(templates)) {
    const key = renderTagTemplate(k, ctx);
    const value = renderTagTemplate(v, ctx);
    if (key.length === 0 || key.length > MAX_KEY) throw new ConfigError(`worker tag "${k}" renders to a key of ${key.length} characters — keys must be 1–${MAX_KEY} characters`);
    if (value.length > MAX_VALUE) throw new ConfigError(`worker tag "${k}" renders to a value of ${value.length} characters — values must be at most ${MAX_VALUE}; shorten the template`);
    out[key] = value;
  }
  return out;
}

/** A stable id for a policy within an appliance: the same name always yields the same id. */
export function policyIdOf(applianceId: string, policyName: string): string {
  return 'pol-' + createHash('sha256').update(`${applianceId}/${policyName}`).digest('hex').slice(0, 12);
}

/** Tags Tender itself puts on what it makes, so a run's resources are found again as one unit. */
export function tenderTags(ctx: TagContext & { runId: string; vmId: string }): Record<string, string> {
  return {
    'tender:appliance': ctx.applianceId,
    'tender:policy': ctx.policyName,
    'tender:policy-id': ctx.policyId,
    'tender:run': ctx.runId,
    'tender:vm': ctx.vmId,
  };
}
