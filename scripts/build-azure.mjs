#!/usr/bin/env node
// Builds the Azure deployment into dist/azure (or --out DIR):
//   index.js              the Functions app (azure/index.ts) as one CommonJS file;
//                         @azure/functions-core is provided by the Functions host,
//                         so it stays external
//   host.json             from the project root
//   package.json          "main": "index.js", so the host finds the functions
//   node_modules/zstd-napi the native zstd addon (Node-API: any Node ≥ 18 ABI)
//   tender.config.yaml    the policies, when --config PATH is given
//   worker/tender-worker.tgz (+ .sha256)
//                         the worker bundle the install Run Command downloads:
//                         agent.cjs (shared/azure/worker-main.ts), zstd-napi,
//                         @napi-rs/blake-hash (keyed BLAKE3 block IDs), and
//                         a Node runtime for the worker when --node DIR names an
//                         unpacked node-v22.x-linux-x64 (Ubuntu 22.04 has no Node 22)
// The tarball is reproducible (sorted, fixed mtime and owner): the same
// sources give the same sha256.
//
//   node scripts/build-azure.mjs [--out DIR] [--config PATH] [--node DIR]

import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { nativeRuntimeFiles } from './native-runtime.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const out = resolve(opt('out') ?? join(root, 'dist', 'azure'));
const configPath = opt('config');
const nodeDir = opt('node') ?? process.env.TENDER_WORKER_NODE_DIR;

// import.meta.url has no CommonJS equivalent: give each bundle its own location.
const cjsCommon = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  define: { 'import.meta.url': '__tenderBundleUrl' },
  banner: { js: 'const __tenderBundleUrl = require("node:url").pathToFileURL(__filename).href;' },
  logLevel: 'warning',
  legalComments: 'none',
  sourcemap: false,
};

/** The native addons' run-time files (scripts/native-runtime.mjs); the Functions app has no codec threads. */
function copyNative(to, opts) {
  for (const f of nativeRuntimeFiles(root, opts)) cpSync(join(root, 'node_modules', f), join(to, 'node_modules', f), { recursive: true });
}

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

// ---- the Functions app
await build({
  ...cjsCommon,
  entryPoints: [join(root, 'azure', 'index.ts')],
  outfile: join(out, 'index.js'),
  external: ['@azure/functions-core', 'zstd-napi'],
});
cpSync(join(root, 'host.json'), join(out, 'host.json'));
writeFileSync(join(out, 'package.json'), JSON.stringify({ name: 'tender-azure', private: true, main: 'index.js', engines: { node: '>=20' } }, null, 2) + '\n');
copyNative(out, { codecThreads: false });
if (configPath) cpSync(resolve(configPath), join(out, 'tender.config.yaml'));

// ---- the worker bundle
const stage = join(out, 'worker', 'app');
mkdirSync(stage, { recursive: true });
await build({ ...cjsCommon, entryPoints: [join(root, 'shared', 'azure', 'worker-main.ts')], outfile: join(stage, 'agent.cjs'), external: ['zstd-napi'] });
copyNative(stage);
if (nodeDir) {
  if (!existsSync(join(nodeDir, 'bin', 'node'))) throw new Error(`--node ${nodeDir}: no bin/node in it — unpack node-v22.x-linux-x64.tar.xz and give its folder`);
  cpSync(nodeDir, join(stage, 'node'), { recursive: true });
}
const tgz = join(out, 'worker', 'tender-worker.tgz');
execFileSync('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-C', stage, '-cf', tgz.replace(/\.tgz$/, '.tar'), '.']);
// gzip -n: no name or timestamp in the header, so the digest depends on the contents only.
execFileSync('sh', ['-c', `gzip -n -9 -c "${tgz.replace(/\.tgz$/, '.tar')}" > "${tgz}" && rm "${tgz.replace(/\.tgz$/, '.tar')}"`]);
rmSync(stage, { recursive: true, force: true });
const digest = createHash('sha256').update(readFileSync(tgz)).digest('hex');
writeFileSync(`${tgz}.sha256`, `${digest}  tender-worker.tgz\n`);

process.stdout.write(`built ${out}\n  index.js, host.json, package.json${configPath ? ', tender.config.yaml' : ''}\n  worker/tender-worker.tgz sha256 ${digest}${nodeDir ? '' : ' (no Node runtime inside: pass --node DIR for Ubuntu workers)'}\n`);
