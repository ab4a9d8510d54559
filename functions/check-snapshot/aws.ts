// Lambda entry point of the checkSnapshot step: parse, build deps, call, return.
import { awsHandler } from '../aws-deps.js';
import { CheckSnapshotInput, CheckSnapshotOutput } from './schema.js';
import { runCheckSnapshot } from './step.js';

export const handler = awsHandler('checkSnapshot', CheckSnapshotInput, CheckSnapshotOutput, runCheckSnapshot);
