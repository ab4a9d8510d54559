#!/usr/bin/env node
// Runs the test suite with Node's own test runner (TypeScript through tsx).
//   npm test                 every test file under test/
//   npm test -- test/worker  only the files under the paths given
// Files are found here because Node 20's --test does not expand globs.
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const args = process.argv.slice(2);
const roots = args.length ? args : ['test'];

function collect(p, out) {
  const st = statSync(p);
  if (st.isDirectory()) {
    for (const name of readdirSync(p).sort()) {
      if (name === 'node_modules' || name === 'fixtures') continue;
      collect(join(p, name), out);
    }
  } else if (/\.test\.ts$/.test(p)) out.push(p);
  return out;
}

const files = roots.flatMap((r) => collect(join(root, r), []));
if (files.length === 0) {
  console.error(`no test files under ${roots.join(', ')}`);
  process.exit(1);
}
const res = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=2', ...files.map((f) => relative(root, f))],
  { cwd: root, stdio: 'inherit', env: { ...process.env, TENDER_LOG_LEVEL: process.env.TENDER_LOG_LEVEL ?? 'silent' } },
);
process.exit(res.status ?? 1);
