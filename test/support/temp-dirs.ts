// Fresh temporary folders for a test file, all removed when its tests are done.
//   const freshDir = tempDirs('tender-folder-store-');  …  const dir = await freshDir();
import { after } from 'node:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function tempDirs(prefix: string): () => Promise<string> {
  const roots: string[] = [];
  after(async () => {
    for (const d of roots) await rm(d, { recursive: true, force: true });
  });
  return async () => {
    const dir = await mkdtemp(join(tmpdir(), prefix));
    roots.push(dir);
    return dir;
  };
}
