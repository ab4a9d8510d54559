// The private-network checks: `tender check-network` and the pipeline's preflight.
export * from './types.js';
export * from './cidr.js';
export * from './aws-checks.js';
export * from './azure-checks.js';
export * from './report.js';
export * from './json-documents.js';
