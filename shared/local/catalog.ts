// Run records as JSON files, one per (run, VM): the last write wins, which is
// what makes recordRun idempotent.

import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Catalog, RunRecord } from '../ports/cloud.js';

export function createLocalCatalog(opts: { workDir: string }): Catalog {
  const dir = join(opts.workDir, 'catalog', 'runs');
  const safe = (s: string) => s.replace(/[^A-Za-z0-9_.-]/g, '-');
  return {
    async recordRun(record: RunRecord): Promise<void> {
      await mkdir(dir, { recursive: true });
      const file = join(dir, `${safe(record.runId)}__${safe(record.vmId)}.json`);
      await writeFile(`${file}.tmp`, JSON.stringify(record, null, 2));
      await rename(`${file}.tmp`, file);
    },
    async listRuns(filter = {}): Promise<RunRecord[]> {
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (e: any) {
        if (e?.code === 'ENOENT') return [];
        throw e;
      }
      const out: RunRecord[] = [];
      for (const n of names.filter((x) => x.endsWith('.json'))) {
        const r = JSON.parse(await readFile(join(dir, n), 'utf8')) as RunRecord;
        if (filter.policy && r.policy !== filter.policy) continue;
        if (filter.vmId && r.vmId !== filter.vmId) continue;
        out.push(r);
      }
      return out.sort((a, b) => a.finishedAt.localeCompare(b.finishedAt));
    },
  };
}
