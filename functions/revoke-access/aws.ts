// Lambda entry point of the revokeAccess step: parse, build deps, call, return.
import { awsHandler } from '../aws-deps.js';
import { RevokeAccessInput, RevokeAccessOutput } from './schema.js';
import { runRevokeAccess } from './step.js';

export const handler = awsHandler('revokeAccess', RevokeAccessInput, RevokeAccessOutput, runRevokeAccess);
