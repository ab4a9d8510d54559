// Lambda entry point of the installWorker step: parse, build deps, call, return.
import { awsHandler } from '../aws-deps.js';
import { InstallWorkerInput, InstallWorkerOutput } from './schema.js';
import { runInstallWorker } from './step.js';

export const handler = awsHandler('installWorker', InstallWorkerInput, InstallWorkerOutput, runInstallWorker);
