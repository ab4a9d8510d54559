// Lambda entry point of the recordOutcome step: parse, build deps, call, return.
import { awsHandler } from '../aws-deps.js';
import { RecordOutcomeInput, RecordOutcomeOutput } from './schema.js';
import { runRecordOutcome } from './step.js';

export const handler = awsHandler('recordOutcome', RecordOutcomeInput, RecordOutcomeOutput, runRecordOutcome);
