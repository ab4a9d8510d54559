// Builds the AWS worker bundle: one .tar.gz holding
//   tender-aws-worker.cjs            shared/aws/worker-main.ts and all it imports (esbuild, CommonJS)
//   node_modules/zstd-napi/…         the native zstd codec, which cannot be bundled: its runtime
//                                    files only (binding.js, build/Release/binding.node)
//   node_modules/@napi-rs/blake-hash…  keyed BLAKE3 for block IDs: its loader and the prebuilt
//                                    binary npm installed for this platform (scripts/native-runtime.mjs)
//   node/…                           optional (--node-dir): a Node.js ≥ 20 distribution, for AMIs
//                                    without Node.js and no package repository in reach
// and manifest.json { key, sha256, bytes } for the config bucket. The install
// command checks the download against that sha256 before it unpacks anything.
//
//   node --import tsx shared/aws/build-worker-bundle.ts [--out dist/aws-worker] [--node-dir DIR]
//
// zstd-napi's binding is compiled for the machine that ran `npm ci`: build on
// Linux x86_64 into a binding that needs no glibc symbol newer than the worker AMI's (Amazon Linux 2023: 2.34; checked), or on
// arm64 for Graviton workers. The build says which it packed.

import { createHash } from 'node:crypto';
import { cp, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createWriteStream, existsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { createGzip } from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { arch, platform } from 'node:os';
import { ConfigError } from '../core/errors.js';
import { nativeRuntimeFiles } from '../../scripts/native-runtime.mjs';

export const PROJECT_ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface AwsWorkerBundle {
  path: string;
  sha256: string;
  bytes: number;
  /** What to upload as worker/manifest.json. */
  manifest: { key: string; sha256: string; bytes: number; platform: string; zstdNapi: string; blakeHash: string; node: string; glibc?: string };
}

async function tarGz(dir: string, out: string): Promise<void> {
  // Deterministic: sorted names, fixed times and owners, gzip without a timestamp.
  const tar = spawn('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-cf', '-', '-C', dir, '.'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  tar.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number>((res, rej) => (tar.on('error', rej), tar.on('close', (c) => res(c ?? 1))));
  await pipeline(tar.stdout, createGzip({ level: 9 }), createWriteStream(out));
  const code = await exited;
  if (code !== 0) throw new Error(`tar failed (${code}): ${stderr.trim()} — GNU tar is needed to build the bundle`);
}

export async function buildAwsWorkerBundle(opts: { outDir: string; root?: string; nodeDir?: string }): Promise<AwsWorkerBundle> {
  const root = opts.root ?? PROJECT_ROOT;
  const outDir = resolve(opts.outDir);
  const tree = join(outDir, 'tree');
  await rm(tree, { recursive: true, force: true });
  await mkdir(tree, { recursive: true });
  const { build } = await import('esbuild');
  await build({
    entryPoints: [join(root, 'shared', 'aws', 'worker-main.ts')],
    outfile: join(tree, 'tender-aws-worker.cjs'),
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    // zstd-napi ships next to the bundle (the BLAKE3 addon is loaded by path, never imported);
    // Azure code is never reached on AWS.
    external: ['zstd-napi', '@azure/*'],
    define: { 'import.meta.url': '__tenderBundleUrl' },
    banner: { js: 'const __tenderBundleUrl = require("node:url").pathToFileURL(__filename).href;' },
    logLevel: 'silent',
    legalComments: 'none',
  });
  const zstdDir = join(root, 'node_modules', 'zstd-napi');
  let files: string[];
  try {
    files = nativeRuntimeFiles(root);
  } catch (e) {
    throw new ConfigError(`${(e as Error).message} — then build the worker bundle again`);
  }
  // The newest glibc any native binding asks for decides where the bundle loads.
  let glibc: string | undefined;
  for (const f of files.filter((x) => x.endsWith('.node'))) {
    const needs = glibcNeeded(await readFile(join(root, 'node_modules', f)));
    if (needs && compareVersions(needs, WORKER_AMI_GLIBC) > 0) {
      throw new ConfigError(`${f} needs glibc ${needs}, newer than the worker AMI's ${WORKER_AMI_GLIBC} (Amazon Linux 2023): it would not load there — run npm ci and this build on an older Linux (Amazon Linux 2023, Debian 11 or 12)`);
    }
    if (needs && (!glibc || compareVersions(needs, glibc) > 0)) glibc = needs;
  }
  for (const f of files) await cp(join(root, 'node_modules', f), join(tree, 'node_modules', f), { recursive: true });
  let node = 'from the AMI (or dnf/apt at install)';
  if (opts.nodeDir) {
    if (!existsSync(join(opts.nodeDir, 'bin', 'node'))) throw new ConfigError(`--node-dir ${opts.nodeDir} has no bin/node: point it at an unpacked Node.js distribution (node-v22.x-linux-x64)`);
    await cp(opts.nodeDir, join(tree, 'node'), { recursive: true });
    node = 'bundled';
  }
  const tmp = join(outDir, 'bundle.tar.gz.tmp');
  await tarGz(tree, tmp);
  const bytes = await readFile(tmp);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const name = `tender-worker-${sha256.slice(0, 16)}.tar.gz`;
  const path = join(outDir, name);
  await cp(tmp, path);
  await rm(tmp, { force: true });
  const versionOf = async (dir: string) => JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')).version as string;
  const manifest = { key: `worker/${name}`, sha256, bytes: bytes.byteLength, platform: `${platform()}-${arch()}`, zstdNapi: await versionOf(zstdDir), blakeHash: await versionOf(join(root, 'node_modules', '@napi-rs', 'blake-hash')), node, ...(glibc ? { glibc } : {}) };
  await writeFile(join(outDir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
  return { path, sha256, bytes: (await stat(path)).size, manifest };
}

/** The glibc of the worker AMI (Amazon Linux 2023): a binding needing newer symbols does not load there. */
export const WORKER_AMI_GLIBC = '2.34';

/**
 * The newest glibc symbol version an ELF binary asks for (its GLIBC_x.y version needs), or
 * undefined when it names none. What decides where it loads is this, not the build machine's
 * glibc: a binding built on Debian 12 (glibc 2.36) may need only 2.34.
 */
export function glibcNeeded(binary: Uint8Array): string | undefined {
  let best: string | undefined;
  for (const m of Buffer.from(binary.buffer, binary.byteOffset, binary.byteLength).toString('latin1').matchAll(/GLIBC_(\d+\.\d+(?:\.\d+)?)\0/g)) {
    if (!best || compareVersions(m[1]!, best) > 0) best = m[1]!;
  }
  return best;
}

function compareVersions(a: string, b: string): number {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  return 0;
}

const isMain = process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const { values } = parseArgs({ options: { out: { type: 'string' }, 'node-dir': { type: 'string' } } });
  const outDir = values.out ?? join(PROJECT_ROOT, 'dist', 'aws-worker');
  const b = await buildAwsWorkerBundle({ outDir, nodeDir: values['node-dir'] });
  process.stdout.write(
    `Built ${b.path}\n  sha256 ${b.sha256}  (${b.bytes} bytes, ${b.manifest.platform}, Node.js ${b.manifest.node})\n\n` +
      `Upload it to the config bucket (the manifest last: the pipeline reads it to find the bundle):\n` +
      `  aws s3 cp ${b.path} s3://$CONFIG_BUCKET/${b.manifest.key}\n` +
      `  aws s3 cp ${join(outDir, 'manifest.json')} s3://$CONFIG_BUCKET/worker/manifest.json\n`,
  );
}
