#!/usr/bin/env node
// tender from a source checkout: TypeScript is loaded through tsx.
import { register } from 'tsx/esm/api';

register();
const { runProcess } = await import('../cli/tender.ts');
await runProcess();
