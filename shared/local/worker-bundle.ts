// The worker bundle: worker/agent.ts and everything it imports, built once by
// esbuild into one CommonJS file and cached under .tender/bundles by a hash of
// its sources, so a second run reuses it. zstd-napi is a native addon and
// cannot be bundled: the worker resolves it through NODE_PATH.

import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

export const PROJECT_ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface WorkerBundle {
  path: string;
  sha256: string;
  bytes: number;
}

async function listTs(dir: string, out: string[] = []): Promise<string[]> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await listTs(p, out);
    else if (/\.(ts|mjs|js|json)$/.test(e.name)) out.push(p);
  }
  return out;
}

async function sourceHash(root: string): Promise<string> {
  const h = createHash('sha256');
  const files = [...(await listTs(join(root, 'worker'))), ...(await listTs(join(root, 'shared'))), join(root, 'package-lock.json')].sort();
  for (const f of files) {
    h.update(relative(root, f)).update('\0');
    h.update(await readFile(f).catch(() => Buffer.alloc(0))).update('\0');
  }
  return h.digest('hex').slice(0, 16);
}

async function fileSha256(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

const building = new Map<string, Promise<WorkerBundle>>();

export async function ensureWorkerBundle(opts: { cacheDir: string; root?: string }): Promise<WorkerBundle> {
  const root = opts.root ?? PROJECT_ROOT;
  const hash = await sourceHash(root);
  const out = join(opts.cacheDir, `worker-agent-${hash}.cjs`);
  const key = out;
  const pending = building.get(key);
  if (pending) return pending;
  const p = (async () => {
    try {
      const st = await stat(out);
      return { path: out, sha256: await fileSha256(out), bytes: st.size };
    } catch {
      // not built yet
    }
    await mkdir(opts.cacheDir, { recursive: true });
    const { build } = await import('esbuild');
    const tmp = `${out}.${process.pid}.tmp`;
    await build({
      entryPoints: [join(root, 'worker', 'agent.ts')],
      outfile: tmp,
      bundle: true,
      platform: 'node',
      format: 'cjs',
      target: 'node20',
      external: ['zstd-napi'],
      // import.meta.url has no CJS equivalent; give it the bundle's own location.
      define: { 'import.meta.url': '__tenderBundleUrl' },
      banner: { js: 'const __tenderBundleUrl = require("node:url").pathToFileURL(__filename).href;' },
      logLevel: 'silent',
      legalComments: 'none',
    });
    await rename(tmp, out);
    const st = await stat(out);
    return { path: out, sha256: await fileSha256(out), bytes: st.size };
  })();
  building.set(key, p);
  p.catch(() => building.delete(key));
  return p;
}
