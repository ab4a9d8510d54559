// Lambda entry point of the checkWorker step: parse, build deps, call, return.
import { awsHandler } from '../aws-deps.js';
import { CheckWorkerInput, CheckWorkerOutput } from './schema.js';
import { runCheckWorker } from './step.js';

export const handler = awsHandler('checkWorker', CheckWorkerInput, CheckWorkerOutput, runCheckWorker);
