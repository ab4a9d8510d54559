// Entry point of the tender-worker bundle (esbuild) and of bin/tender-worker.mjs.
import { main } from './cli.js';

void main();
