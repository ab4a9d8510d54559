#!/usr/bin/env node
// tender from a source checkout: TypeScript is loaded through tsx.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../cli/tender.ts');
process.exitCode = await main(process.argv.slice(2), {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
  cwd: process.cwd(),
  env: process.env,
  isTTY: process.stdout.isTTY,
  columns: process.stdout.columns,
});
