// Lambda entry point of the snapshot step: parse, build deps, call, return.
import { awsHandler } from '../aws-deps.js';
import { SnapshotInput, SnapshotOutput } from './schema.js';
import { runSnapshot } from './step.js';

export const handler = awsHandler('snapshot', SnapshotInput, SnapshotOutput, runSnapshot);
