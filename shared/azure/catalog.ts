// Run records as JSON blobs in the state container, one per (run, VM): the
// last write wins, which is what makes recordRun idempotent (as the local
// catalog's files do).

import { createHash } from 'node:crypto';
import type { Catalog, RunRecord } from '../ports/cloud.js';
import type { StateStore } from './state-store.js';

const PREFIX = 'catalog/runs/';

export function createAzureCatalog(opts: { state: StateStore }): Catalog {
  const safe = (s: string) => s.replace(/[^A-Za-z0-9_.-]/g, '-');
  // VM ids are ARM ids: a hash keeps the blob name short and free of slashes.
  const keyOf = (r: { runId: string; vmId: string }) => `${PREFIX}${safe(r.runId)}__${createHash('sha256').update(r.vmId).digest('hex').slice(0, 16)}.json`;
  return {
    async recordRun(record: RunRecord): Promise<void> {
      await opts.state.write(keyOf(record), record);
    },
    async listRuns(filter = {}): Promise<RunRecord[]> {
      const docs = await opts.state.list<RunRecord>(PREFIX);
      return docs
        .map((d) => d.value)
        .filter((r) => (!filter.policy || r.policy === filter.policy) && (!filter.vmId || r.vmId === filter.vmId))
        .sort((a, b) => a.finishedAt.localeCompare(b.finishedAt));
    },
  };
}
