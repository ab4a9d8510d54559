// Lambda entry point of the checkBackup step: parse, build deps, call, return.
import { awsHandler } from '../aws-deps.js';
import { CheckBackupInput, CheckBackupOutput } from './schema.js';
import { runCheckBackup } from './step.js';

export const handler = awsHandler('checkBackup', CheckBackupInput, CheckBackupOutput, runCheckBackup);
