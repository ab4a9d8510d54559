#!/usr/bin/env node
// tender-worker from a source checkout: TypeScript is loaded through tsx.
// (Workers run the esbuild bundle of worker/main.ts instead.)
import { register } from 'tsx/esm/api';

register();
await import('../worker/main.ts');
