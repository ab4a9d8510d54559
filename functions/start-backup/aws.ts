// Lambda entry point of the startBackup step: parse, build deps, call, return.
import { awsHandler } from '../aws-deps.js';
import { StartBackupInput, StartBackupOutput } from './schema.js';
import { runStartBackup } from './step.js';

export const handler = awsHandler('startBackup', StartBackupInput, StartBackupOutput, runStartBackup);
