// Lambda entry point of the deployWorker step: parse, build deps, call, return.
import { awsHandler } from '../aws-deps.js';
import { DeployWorkerInput, DeployWorkerOutput } from './schema.js';
import { runDeployWorker } from './step.js';

export const handler = awsHandler('deployWorker', DeployWorkerInput, DeployWorkerOutput, runDeployWorker);
