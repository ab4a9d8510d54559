// Lambda entry point of the deallocateWorker step: parse, build deps, call, return.
import { awsHandler } from '../aws-deps.js';
import { DeallocateWorkerInput, DeallocateWorkerOutput } from './schema.js';
import { runDeallocateWorker } from './step.js';

export const handler = awsHandler('deallocateWorker', DeallocateWorkerInput, DeallocateWorkerOutput, runDeallocateWorker);
