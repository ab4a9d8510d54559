// Lambda entry point of the applyRetention step: parse, build deps, call, return.
import { awsHandler } from '../aws-deps.js';
import { ApplyRetentionInput, ApplyRetentionOutput } from './schema.js';
import { runApplyRetention } from './step.js';

export const handler = awsHandler('applyRetention', ApplyRetentionInput, ApplyRetentionOutput, runApplyRetention);
