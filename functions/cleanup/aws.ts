// Lambda entry point of the cleanup step: parse, build deps, call, return.
import { awsHandler } from '../aws-deps.js';
import { CleanupInput, CleanupOutput } from './schema.js';
import { runCleanup } from './step.js';

export const handler = awsHandler('cleanup', CleanupInput, CleanupOutput, runCleanup);
