// The native addons the data mover loads at run time, which no bundler can inline: the
// files of each that a worker needs (never their sources or build trees), as paths under
// node_modules. The AWS worker bundle (shared/aws/build-worker-bundle.ts) and the Azure
// build (scripts/build-azure.mjs) ship exactly these next to their bundles.
//
//   zstd-napi            compiled by npm ci on the building machine (its install script); only
//                        its binding is loaded (worker/zstd.ts, the codec threads), never its
//                        JavaScript API
//   @napi-rs/blake-hash  keyed BLAKE3 for format 2 block IDs (codec threads only): the loader
//                        and the prebuilt binary npm installed for the building machine's
//                        platform (an optional dependency per platform)

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const ZSTD = ['package.json', 'binding.js', 'LICENSE', 'NOTICE', 'build/Release/binding.node'];

/**
 * Paths (relative to node_modules) to copy. `codecThreads: false` leaves out what only the
 * codec threads load (a Lambda or Functions app that prunes never hashes a block).
 * Throws when an addon is missing, saying what to run.
 */
export function nativeRuntimeFiles(root, { codecThreads = true } = {}) {
  const modules = join(root, 'node_modules');
  if (!existsSync(join(modules, 'zstd-napi', 'build', 'Release', 'binding.node'))) {
    throw new Error(`${join(modules, 'zstd-napi')}/build/Release/binding.node is missing: run npm ci (zstd-napi's install script must be allowed) before building`);
  }
  const files = ZSTD.map((f) => join('zstd-napi', f)).filter((f) => existsSync(join(modules, f)));
  if (!codecThreads) return files;
  const blake = join('@napi-rs', 'blake-hash');
  if (!existsSync(join(modules, blake, 'index.js'))) throw new Error(`${join(modules, blake)} is missing: run npm ci before building`);
  files.push(...['package.json', 'index.js', 'LICENSE'].map((f) => join(blake, f)).filter((f) => existsSync(join(modules, f))));
  const platforms = Object.keys(JSON.parse(readFileSync(join(modules, blake, 'package.json'), 'utf8')).optionalDependencies ?? {}).filter((p) => existsSync(join(modules, p)));
  if (platforms.length === 0) throw new Error(`no prebuilt @napi-rs/blake-hash binary for ${process.platform}-${process.arch} in ${modules}: run npm ci on the platform the workers run on (Linux x64 or arm64)`);
  for (const p of platforms) {
    files.push(join(p, 'package.json'));
    for (const f of readdirSync(join(modules, p))) if (f.endsWith('.node')) files.push(join(p, f));
  }
  return files;
}
