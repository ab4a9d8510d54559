// Catalog port as JSON objects in the config bucket, one per (VM, run):
// catalog/vms/<vmId>/<runId>.json. The last write wins, which makes recordRun
// idempotent, and a VM's history is one prefix listing away (start-backup
// looks up the parent set by VM). Kept simple on purpose: a few objects per VM
// per day, read by a handful of steps.

import { safeId } from './naming.js';
import type { Catalog, RunRecord } from '../ports/cloud.js';
import type { ConfigBucket } from './run-resources.js';

export function createS3Catalog(opts: { configBucket: ConfigBucket; prefix?: string }): Catalog {
  const root = opts.prefix ?? 'catalog/vms/';
  const bucket = opts.configBucket;
  return {
    async recordRun(record: RunRecord): Promise<void> {
      await bucket.putJson(`${root}${safeId(record.vmId)}/${safeId(record.runId)}.json`, record);
    },
    async listRuns(filter = {}): Promise<RunRecord[]> {
      const keys = (await bucket.list(filter.vmId ? `${root}${safeId(filter.vmId)}/` : root)).filter((k) => k.endsWith('.json'));
      const out: RunRecord[] = [];
      for (const k of keys) {
        const r = await bucket.getJson<RunRecord>(k);
        if (!r) continue;
        if (filter.policy && r.policy !== filter.policy) continue;
        if (filter.vmId && r.vmId !== filter.vmId) continue;
        out.push(r);
      }
      return out.sort((a, b) => a.finishedAt.localeCompare(b.finishedAt));
    },
  };
}
